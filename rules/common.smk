# Constants and helper functions shared by the rule files (included first by the Snakefile,
# after the config is loaded and validated). The rule files hold only rules.

import json
import os
import shlex
import sys

from conta_core.config import pretrain_targets

R = f"{config['results_dir']}/{config['run']}"
T = int(config["rounds"])
SHARDS = list(range(int(config["shards"])))
PY = sys.executable
SCRIPTS = f"{workflow.basedir}/workflow_scripts"
CONDA_ENV = f"{workflow.basedir}/envs/conta.yaml"  # `conda:` of every shell step
MANIFEST = f"{R}/data/manifest.json"
CONTA = config["context"]["mode"] in ("conta", "placebo")  # modes with the context module
AMN = config["method"] == "amn"
GPU = int(config["gpus_per_job"])  # `gpu` resource of GPU rules (0 on CPU-only clusters)

# pretrain.enabled (synthetic data): the sections with `pretrained: null` start from the
# generated weights of rule `pretrain`; their params (and checkpoints) name that file.
PRETRAIN_SECTIONS = pretrain_targets(config)
PRETRAIN_WEIGHTS = f"{R}/pretrain/{config['pretrain']['backbone']}.pth" if PRETRAIN_SECTIONS else None
for _section in PRETRAIN_SECTIONS:
    config[_section]["pretrained"] = PRETRAIN_WEIGHTS

if AMN and "amn" not in config:
    raise WorkflowError("config key amn: required when method = amn")

# amn.* keys used after training (inference, evaluation, IR labels, walk), not by train_amn.
AMN_POST_KEYS = ("eval_threshold", "ir_fg_threshold", "ir_bg_threshold", "rw_power", "inference_dropout")

# The `report` config section; the fallback mirrors config/config.yaml for configs without it.
REPORT = config.get("report", {"num_images": 4, "image_ids": None, "tile_px": 128, "dpi": 100})
REPORT_JSON = json.dumps(REPORT, sort_keys=True)  # --cfg of the figure scripts (reruns when it changes)
LOSS_STAGES = ["cls", "irn", "seg"] if config["method"] == "irn" else ["cls", "amn", "irn", "seg"]
MASK_EVALS = ["pseudo_mask", "seg_train", "seg_val"]  # stage of round<t>/<stage file>


def pretrain_input(section: str) -> list[str]:
    """[the generated weights] when `section` starts from them, else []."""
    return [PRETRAIN_WEIGHTS] if section in PRETRAIN_SECTIONS else []


# --- generic helpers ---------------------------------------------------------------------


def cfg_json(*sections: str) -> str:
    """The named config sections as one JSON object (a rule's params: reruns when they change)."""
    return json.dumps({s: config[s] for s in sections}, sort_keys=True)


def section_json(section: str) -> str:
    """One config section as a JSON object (the step's own settings)."""
    return json.dumps(config[section], sort_keys=True)


def script(name: str) -> str:
    """Path of the thin CLI workflow_scripts/<name>."""
    return f"{SCRIPTS}/{name}"


def rdir(t: int | str) -> str:
    """Folder of round t's artifacts."""
    return f"{R}/round{t}"


def shard_dirs(t: int | str, what: str) -> list[str]:
    """All shard folders of a sharded per-image artifact of round t."""
    return [f"{rdir(t)}/{what}/{s}" for s in SHARDS]


def seg_pred_dirs(t: int | str, split: str) -> list[str]:
    """All shard folders of round t's segmentation predictions on `split`."""
    return [f"{rdir(t)}/seg_pred/{split}/{s}" for s in SHARDS]


def flags(flag: str, paths) -> str:
    """Repeat a CLI flag for each path: flags('--cams-dir', [...])."""
    return " ".join(f"{flag} {p}" for p in paths)


def spec_flags(flag: str, specs: dict) -> str:
    """--flag 'KEY=path' for each item of a {KEY: path} dict."""
    return " ".join(f"{flag} {shlex.quote(f'{k}={v}')}" for k, v in specs.items())


def run_dir_of(path: str, rel: str) -> str:
    """The run folder R of a job's file `path` = R/`rel`, derived from the path itself."""
    head = path.removesuffix(rel)
    if head == path or not head.endswith(os.sep):
        raise WorkflowError(f"{path}: expected <results_dir>/<run>{os.sep}{rel}")
    return os.path.dirname(head)


def round_list(t: int | str) -> str:
    """Rounds 0..t as the space-separated --rounds argument."""
    return " ".join(str(r) for r in range(int(t) + 1))


def round_seed(w) -> int:
    """Seed of round w.t's training steps: config `seed` + t, or `seed` with seed_per_round false."""
    return config["seed"] + (int(w.t) if config["seed_per_round"] else 0)


def context_flags(xm: list[str], confounder: list[str]) -> str:
    """--xm-dir per X_m folder and --confounder per confounder file (context of round t > 0)."""
    return " ".join([flags("--xm-dir", xm)] + [f"--confounder {c}" for c in confounder])


# --- classify / confounder ---------------------------------------------------------------


def xm_dirs(t: int | str) -> list[str]:
    """Folders of X_m for round t: round t-1's masks (none for round 0 or context: none)."""
    t = int(t)
    if t == 0 or not CONTA:
        return []
    if config["context"]["confounder_source"] == "pseudo":
        return shard_dirs(t - 1, "pseudo_mask")
    return seg_pred_dirs(t - 1, "train")


def confounder_input(t: int | str) -> list[str]:
    """Confounder set of round t-1 that round t's context map attends over (t > 0, conta)."""
    t = int(t)
    return [f"{rdir(t - 1)}/confounder.h5"] if t > 0 and CONTA else []


def confounder_masks(t: int | str) -> list[str]:
    """Masks the confounder set of round t averages: segmentation predictions or pseudo-masks."""
    if config["context"]["confounder_source"] == "pseudo":
        return shard_dirs(t, "pseudo_mask")
    return seg_pred_dirs(t, "train")


# --- pseudo-masks (irn / amn routing) ----------------------------------------------------


def seed_dirs(t: int | str) -> list[str]:
    """IR label folders IRNet trains on: ir_label (irn) or amn_ir_label (amn)."""
    return shard_dirs(t, "amn_ir_label" if AMN else "ir_label")


def walk_cam_dirs(t: int | str) -> list[str]:
    """Map folders the random walk propagates: cam (irn) or amn_cam (amn)."""
    return shard_dirs(t, "amn_cam" if AMN else "cam")


def random_walk_json() -> str:
    """The random_walk section (+ cam_power = amn.rw_power for amn) as --cfg JSON."""
    if not AMN:
        return section_json("random_walk")
    return json.dumps({**config["random_walk"], "cam_power": config["amn"]["rw_power"]}, sort_keys=True)


# --- amn (called only when method = amn) -------------------------------------------------


def amn_train_json() -> str:
    """--cfg of train_amn: the amn training/model keys and the context section."""
    amn = {k: v for k, v in config["amn"].items() if k not in AMN_POST_KEYS}
    return json.dumps({"amn": amn, "context": config["context"]}, sort_keys=True)


def amn_infer_json() -> str:
    """--cfg of make_amn_cam: the cam section's scales, flip and resize, amn.inference_dropout."""
    cfg = {"scales": config["cam"]["scales"], "flip": config["cam"]["flip"], "resize": config["cam"]["resize"],
           "inference_dropout": config["amn"].get("inference_dropout", False)}
    return json.dumps(cfg, sort_keys=True)


def amn_eval_json() -> str:
    """--cfg of eval_amn_cam: the cam sweep with amn.eval_threshold (same CSV layout)."""
    return json.dumps({**config["cam"], "eval_threshold": config["amn"]["eval_threshold"]}, sort_keys=True)


def amn_ir_label_json() -> str:
    """--cfg of make_amn_ir_label: the ir_label section (CRF) with AMN's thresholds."""
    cfg = {**config["ir_label"], "fg_threshold": config["amn"]["ir_fg_threshold"],
           "bg_threshold": config["amn"]["ir_bg_threshold"]}
    return json.dumps(cfg, sort_keys=True)


# --- summaries and figures ---------------------------------------------------------------


def round_evals(t: int | str) -> list[str]:
    """Every evaluation CSV of rounds 0..t that a summary table reads."""
    files = []
    for r in range(int(t) + 1):
        files += [
            f"{rdir(r)}/cam_eval.csv",
            f"{rdir(r)}/pseudo_mask_eval.csv",
            f"{rdir(r)}/seg_eval_val.csv",
            f"{rdir(r)}/seg_eval_train.csv",
        ]
        if AMN:  # method amn: the AMN map sweep too (summary columns amn_cam_*)
            files.append(f"{rdir(r)}/amn_cam_eval.csv")
        if CONTA and r > 0 and not AMN:  # summary columns ctx_* (the classifier's context)
            files.append(f"{rdir(r)}/context_diagnostics.json")
    return files


def fig_dir(t: int | str) -> str:
    """Folder of round t's report figures."""
    return f"{rdir(t)}/figures"


def figure_files(t: int | str) -> list[str]:
    """All report figures and tables of round t (cumulative over rounds 0..t)."""
    t = int(t)
    names = ["samples", "miou.png", "cam_sweep.png", "train_loss.png", "summary.csv", "per_class_iou.csv"]
    files = [f"{fig_dir(t)}/{n}" for n in names]
    if CONTA:
        files += [f"{fig_dir(r)}/confounder.png" for r in range(t)]
    return files


def mask_eval_file(t: int | str, stage: str) -> str:
    """Evaluation CSV of a mask stage (pseudo_mask, seg_train, seg_val) of round t."""
    return f"{rdir(t)}/{'pseudo_mask_eval' if stage == 'pseudo_mask' else stage.replace('seg_', 'seg_eval_')}.csv"


def sample_inputs(t: int | str) -> list[str]:
    """Every artifact the overview grids of rounds 0..t read (so they are rendered last)."""
    files = []
    for r in range(int(t) + 1):
        files += shard_dirs(r, "cam") + shard_dirs(r, "ir_label") + shard_dirs(r, "pseudo_mask")
        files += seg_pred_dirs(r, "train")
        if r > 0 and CONTA:
            files.append(f"{rdir(r)}/cls/model.pth")
    return files


def loss_logs(t: int | str) -> dict[str, str]:
    """Training-log CSV of each stage of rounds 0..t, keyed 'stage:round'."""
    return {f"{stage}:{r}": f"{rdir(r)}/{stage}/train_log.csv" for r in range(int(t) + 1) for stage in LOSS_STAGES}


def iou_evals(t: int | str) -> dict[str, str]:
    """Evaluation CSV of each stage of rounds 0..t, keyed 'round:stage'."""
    evals = {}
    for r in range(int(t) + 1):
        evals[f"{r}:cam"] = f"{rdir(r)}/cam_eval.csv"
        evals.update({f"{r}:{stage}": mask_eval_file(r, stage) for stage in MASK_EVALS})
    return evals
