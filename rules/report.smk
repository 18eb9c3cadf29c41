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
        shared_dir=shared_dir_param,
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
        shared_dir=shared_dir_param,


# Measures of the confounding (conta_core.evaluation.confounding): pair confusion m(k->c), background
# and texture leak, part misses, boundary F of every evaluated stage; summary columns cf_*.


rule confounding:
    input:
        manifest=MANIFEST,
        pred_dir=confounding_preds_of,
    output:
        out=L.confounding("{t}", "{stage}"),
    log:
        L.log("confounding", "round{t}_{stage}"),
    benchmark:
        L.benchmark("confounding", "round{t}_{stage}")
    wildcard_constraints:
        stage="|".join(CONFOUNDING_STAGES),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=json.dumps({"cam_threshold": config["cam"]["eval_threshold"]}),
        split=confounding_split_of,
    script:
        "../workflow_scripts/confounding.py"
