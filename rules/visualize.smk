# Report figures of round t (snakemake --report report.html round<t>), under
# results/<run>/round<t>/figures/: overview grids of sample images (rows = rounds 0..t),
# mIoU per round, CAM threshold sweeps, training losses, the summary and per-class IoU
# tables, and (context.mode conta) the confounder set of each round r < t, i.e. the
# set the context map M_{r+1} attends over (round<r>/figures/confounder.png).
# figure_files(t) lists them (wired into the round targets; helpers in rules/common.smk);
# target `report_figures` = round T.

report: "../report/workflow.rst"


rule report_figures:
    input:
        figure_files(T),


rule figure_samples:
    input:
        manifest=MANIFEST,
        artifacts=lambda w: sample_inputs(w.t),
    output:
        report(
            directory(f"{R}/round{{t}}/figures/samples"),
            patterns=["{image_id}.png"],
            caption="../report/samples.rst",
            category="Per-image overview",
            subcategory="rounds 0 to {t}",
            labels={"image": "{image_id}", "rounds": "0-{t}"},
        ),
    params:
        py=PY,
        script=script("visualize.py"),
        cfg=REPORT_JSON,
        run_dir=lambda w, output: run_dir_of(output[0], f"round{w.t}/figures/samples"),
        rounds=lambda w: round_list(w.t),
        seed=config["seed"],
    log:
        f"{R}/logs/figure_samples/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/figure_samples/round{{t}}.tsv"
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --run-dir {params.run_dir} --rounds {params.rounds}"
        " --out-dir {output} --seed {params.seed} --device cpu --threads {threads} > {log} 2>&1"


rule figure_miou:
    input:
        f"{R}/round{{t}}/summary.csv",
    output:
        report(
            f"{R}/round{{t}}/figures/miou.png",
            caption="../report/miou.rst",
            category="Scores",
            labels={"figure": "mIoU per round", "rounds": "0-{t}"},
        ),
    params:
        py=PY,
        script=script("plots.py"),
        cfg=REPORT_JSON,
    log:
        f"{R}/logs/figures/round{{t}}_miou.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} miou --summary {input} --out {output} > {log} 2>&1"


rule figure_cam_sweep:
    input:
        lambda w: [f"{rdir(r)}/cam_eval.csv" for r in range(int(w.t) + 1)],
    output:
        report(
            f"{R}/round{{t}}/figures/cam_sweep.png",
            caption="../report/cam_sweep.rst",
            category="Scores",
            labels={"figure": "CAM threshold sweep", "rounds": "0-{t}"},
        ),
    params:
        py=PY,
        script=script("plots.py"),
        cfg=REPORT_JSON,
        curves=lambda w, input: spec_flags("--curve", {f"round {r}": p for r, p in enumerate(input)}),
    log:
        f"{R}/logs/figures/round{{t}}_cam_sweep.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} cam-sweep {params.curves} --out {output} > {log} 2>&1"


rule figure_train_loss:
    input:
        lambda w: list(loss_logs(w.t).values()),
    output:
        report(
            f"{R}/round{{t}}/figures/train_loss.png",
            caption="../report/train_loss.rst",
            category="Training",
            labels={"figure": "training losses", "rounds": "0-{t}"},
        ),
    params:
        py=PY,
        script=script("plots.py"),
        cfg=REPORT_JSON,
        logs=lambda w: spec_flags("--log", loss_logs(w.t)),
    log:
        f"{R}/logs/figures/round{{t}}_train_loss.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} losses {params.logs} --out {output} > {log} 2>&1"


rule figure_confounder:
    input:
        f"{R}/round{{t}}/confounder.h5",
    output:
        report(
            f"{R}/round{{t}}/figures/confounder.png",
            caption="../report/confounder.rst",
            category="Confounder set",
            labels={"figure": "confounder set", "round": "{t}"},
        ),
    params:
        py=PY,
        script=script("plots.py"),
        cfg=REPORT_JSON,
    log:
        f"{R}/logs/figures/round{{t}}_confounder.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} confounder --confounder {input} --out {output} > {log} 2>&1"


rule table_per_class_iou:
    input:
        lambda w: list(iou_evals(w.t).values()),
    output:
        report(
            f"{R}/round{{t}}/figures/per_class_iou.csv",
            caption="../report/per_class_iou.rst",
            category="Scores",
            labels={"figure": "per-class IoU table", "rounds": "0-{t}"},
        ),
    params:
        py=PY,
        script=script("plots.py"),
        cfg=REPORT_JSON,
        evals=lambda w: spec_flags("--eval", iou_evals(w.t)),
    log:
        f"{R}/logs/figures/round{{t}}_per_class_iou.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} iou-table {params.evals} --out {output} > {log} 2>&1"


rule table_summary:
    input:
        f"{R}/round{{t}}/summary.csv",
    output:
        report(
            f"{R}/round{{t}}/figures/summary.csv",
            caption="../report/summary.rst",
            category="Scores",
            labels={"figure": "summary table", "rounds": "0-{t}"},
        ),
    log:
        f"{R}/logs/figures/round{{t}}_summary.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "cp {input} {output} > {log} 2>&1"
