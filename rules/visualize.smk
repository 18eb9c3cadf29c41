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
        artifacts=sample_inputs_of,
    output:
        out_dir=report(
            directory(L.figure("{t}", "samples")),
            patterns=["{image_id}.png"],
            caption="../report/samples.rst",
            category="Per-image overview",
            subcategory="rounds 0 to {t}",
            labels={"image": "{image_id}", "rounds": "0-{t}"},
        ),
    log:
        L.log("figure_samples", "round{t}"),
    benchmark:
        L.benchmark("figure_samples", "round{t}")
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        run_dir=run_dir_param,
        shared_dir=shared_dir_param,
        rounds=rounds_of,
        seed=config["seed"],
        device="cpu",
    script:
        "../workflow_scripts/visualize.py"


rule figure_miou:
    input:
        summary=L.summary("{t}"),
    output:
        out=report(
            L.figure("{t}", "miou.png"),
            caption="../report/miou.rst",
            category="Scores",
            labels={"figure": "mIoU per round", "rounds": "0-{t}"},
        ),
    log:
        L.log("figures", "round{t}_miou"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        figure="miou",
    script:
        "../workflow_scripts/plots.py"


rule figure_confounding:
    input:
        summary=L.summary("{t}"),
    output:
        out=report(
            L.figure("{t}", "confounding.png"),
            caption="../report/confounding.rst",
            category="Scores",
            labels={"figure": "confounding measures", "rounds": "0-{t}"},
        ),
    log:
        L.log("figures", "round{t}_confounding"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        figure="confounding",
    script:
        "../workflow_scripts/plots.py"


rule figure_cam_sweep:
    input:
        curve=cam_evals_of,
    output:
        out=report(
            L.figure("{t}", "cam_sweep.png"),
            caption="../report/cam_sweep.rst",
            category="Scores",
            labels={"figure": "CAM threshold sweep", "rounds": "0-{t}"},
        ),
    log:
        L.log("figures", "round{t}_cam_sweep"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        figure="cam-sweep",
    script:
        "../workflow_scripts/plots.py"


rule figure_train_loss:
    input:
        train_log=loss_logs_of,
    output:
        out=report(
            L.figure("{t}", "train_loss.png"),
            caption="../report/train_loss.rst",
            category="Training",
            labels={"figure": "training losses", "rounds": "0-{t}"},
        ),
    log:
        L.log("figures", "round{t}_train_loss"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        figure="losses",
    script:
        "../workflow_scripts/plots.py"


rule figure_confounder:
    input:
        confounder=L.confounder("{t}"),
    output:
        out=report(
            L.figure("{t}", "confounder.png"),
            caption="../report/confounder.rst",
            category="Confounder set",
            labels={"figure": "confounder set", "round": "{t}"},
        ),
    log:
        L.log("figures", "round{t}_confounder"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        figure="confounder",
    script:
        "../workflow_scripts/plots.py"


rule table_per_class_iou:
    input:
        eval=iou_evals_of,
    output:
        out=report(
            L.figure("{t}", "per_class_iou.csv"),
            caption="../report/per_class_iou.rst",
            category="Scores",
            labels={"figure": "per-class IoU table", "rounds": "0-{t}"},
        ),
    log:
        L.log("figures", "round{t}_per_class_iou"),
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=REPORT_JSON,
        figure="iou-table",
    script:
        "../workflow_scripts/plots.py"


rule table_summary:
    input:
        L.summary("{t}"),
    output:
        report(
            L.figure("{t}", "summary.csv"),
            caption="../report/summary.rst",
            category="Scores",
            labels={"figure": "summary table", "rounds": "0-{t}"},
        ),
    log:
        L.log("figures", "round{t}_summary"),
    conda:
        CONDA_ENV
    threads: 1
    shell:
        "cp {input} {output} > {log} 2>&1"
