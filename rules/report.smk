# Round summaries: results/<run>/round<t>/summary.csv holds rounds 0..t (a round's
# target); results/<run>/summary.csv holds all rounds 0..T (target `all`).


rule round_summary:
    input:
        round_evals_of,
    output:
        out=L.summary("{t}"),
    log:
        L.log("summary", "round{t}"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        run_dir=run_dir_param,
        rounds=rounds_of,
        no_ground_truth=not HAS_GT,
    script:
        "../workflow_scripts/summary.py"


use rule round_summary as summary with:
    input:
        round_evals(T),
    output:
        out=L.summary(),
    log:
        L.log("summary", "all"),
    params:
        run_dir=run_dir_param,
        rounds=list(range(T + 1)),
        no_ground_truth=not HAS_GT,
