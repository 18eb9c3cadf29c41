# Round summaries: results/<run>/round<t>/summary.csv holds rounds 0..t (a round's
# target); results/<run>/summary.csv holds all rounds 0..T (target `all`).


rule round_summary:
    input:
        lambda w: round_evals(w.t),
    output:
        f"{R}/round{{t}}/summary.csv",
    params:
        py=PY,
        script=script("summary.py"),
        run_dir=lambda w, output: run_dir_of(output[0], f"round{w.t}/summary.csv"),
        rounds=lambda w: round_list(w.t),
    log:
        f"{R}/logs/summary/round{{t}}.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --run-dir {params.run_dir} --rounds {params.rounds} --out {output} > {log} 2>&1"


rule summary:
    input:
        round_evals(T),
    output:
        f"{R}/summary.csv",
    params:
        py=PY,
        script=script("summary.py"),
        run_dir=lambda w, output: run_dir_of(output[0], "summary.csv"),
        rounds=round_list(T),
    log:
        f"{R}/logs/summary/all.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --run-dir {params.run_dir} --rounds {params.rounds} --out {output} > {log} 2>&1"
