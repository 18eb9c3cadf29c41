# Report figures of round t (snakemake --report report.html round<t>), under
# results/<run>/round<t>/figures/: overview grids of sample images (rows = rounds 0..t),
# mIoU per round, CAM threshold sweeps, training losses, the summary and per-class IoU
# tables, and (context.mode conta) the confounder set of each round r < t, i.e. the
# set the context map M_{r+1} attends over (round<r>/figures/confounder.png).
# figure_files(t) lists them (wired into the round targets); target `report_figures` = round T.

import shlex

report: "../report/workflow.rst"

# The `report` config section; the fallback mirrors config/config.yaml for configs without it.
REPORT = config.get("report", {"num_images": 4, "image_ids": None, "tile_px": 128, "dpi": 100})
REPORT_JSON = json.dumps(REPORT, sort_keys=True)  # --cfg of the figure scripts (reruns when it changes)
LOSS_STAGES = ["cls", "irn", "seg"] if config["method"] == "irn" else ["cls", "amn", "irn", "seg"]
MASK_EVALS = ["pseudo_mask", "seg_train", "seg_val"]  # stage of round<t>/<stage file>


def fig_dir(t):
    return f"{rdir(t)}/figures"


def figure_files(t):
    """All report figures and tables of round t (cumulative over rounds 0..t)."""
    t = int(t)
    names = ["samples", "miou.png", "cam_sweep.png", "train_loss.png", "summary.csv", "per_class_iou.csv"]
    files = [f"{fig_dir(t)}/{n}" for n in names]
    if CONTA:
        files += [f"{fig_dir(r)}/confounder.png" for r in range(t)]
    return files


def mask_eval_file(t, stage):
    return f"{rdir(t)}/{'pseudo_mask_eval' if stage == 'pseudo_mask' else stage.replace('seg_', 'seg_eval_')}.csv"


def sample_inputs(t):
    """Every artifact the overview grids of rounds 0..t read (so they are rendered last)."""
    t = int(t)
    files = []
    for r in range(t + 1):
        files += shard_dirs(r, "cam") + shard_dirs(r, "ir_label") + shard_dirs(r, "pseudo_mask")
        files += [f"{rdir(r)}/seg_pred/train/{s}" for s in SHARDS]
        if r > 0 and CONTA:
            files.append(f"{rdir(r)}/cls/model.pth")
    return files


def loss_logs(t):
    return {f"{stage}:{r}": f"{rdir(r)}/{stage}/train_log.csv" for r in range(int(t) + 1) for stage in LOSS_STAGES}


def iou_evals(t):
    evals = {}
    for r in range(int(t) + 1):
        evals[f"{r}:cam"] = f"{rdir(r)}/cam_eval.csv"
        evals.update({f"{r}:{stage}": mask_eval_file(r, stage) for stage in MASK_EVALS})
    return evals


def spec_flags(flag, specs):
    """--flag 'KEY=path' for each item of a {KEY: path} dict."""
    return " ".join(f"{flag} {shlex.quote(f'{k}={v}')}" for k, v in specs.items())


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
        cfg=REPORT_JSON,
        rounds=lambda w: " ".join(str(r) for r in range(int(w.t) + 1)),
    log:
        f"{R}/logs/figure_samples/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/figure_samples/round{{t}}.tsv"
    threads: 1
    shell:
        "{PY} {SCRIPTS}/visualize.py --cfg {params.cfg:q} --run-dir {R} --rounds {params.rounds}"
        " --out-dir {output} --seed {config[seed]} --device cpu --threads {threads} > {log} 2>&1"


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
        cfg=REPORT_JSON,
    log:
        f"{R}/logs/figures/round{{t}}_miou.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/plots.py --cfg {params.cfg:q} miou --summary {input} --out {output} > {log} 2>&1"


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
        cfg=REPORT_JSON,
        curves=lambda w, input: spec_flags("--curve", {f"round {r}": p for r, p in enumerate(input)}),
    log:
        f"{R}/logs/figures/round{{t}}_cam_sweep.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/plots.py --cfg {params.cfg:q} cam-sweep {params.curves} --out {output} > {log} 2>&1"


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
        cfg=REPORT_JSON,
        logs=lambda w: spec_flags("--log", loss_logs(w.t)),
    log:
        f"{R}/logs/figures/round{{t}}_train_loss.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/plots.py --cfg {params.cfg:q} losses {params.logs} --out {output} > {log} 2>&1"


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
        cfg=REPORT_JSON,
    log:
        f"{R}/logs/figures/round{{t}}_confounder.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/plots.py --cfg {params.cfg:q} confounder --confounder {input} --out {output} > {log} 2>&1"


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
        cfg=REPORT_JSON,
        evals=lambda w: spec_flags("--eval", iou_evals(w.t)),
    log:
        f"{R}/logs/figures/round{{t}}_per_class_iou.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/plots.py --cfg {params.cfg:q} iou-table {params.evals} --out {output} > {log} 2>&1"


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
    threads: 1
    shell:
        "cp {input} {output}"
