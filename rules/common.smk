# Constants and named input functions shared by the rule files (included first by the
# Snakefile, after the config is loaded and validated). The rule files hold only rules; every
# artifact path comes from conta_core.infra.layout.RunLayout (L), every option of a workflow script
# from the rule's named input / output / params (conta_core.script.snakemake_argv).

import json
import os

from conta_core.infra.config import has_ground_truth, pretrain_targets, with_pretrain
from conta_core.infra.layout import CONFOUNDING_STAGES, RunLayout
from conta_core.infra.methods import ACTIVE_MODES, method
from conta_core.infra.rule_configs import rule_configs

R = f"{config['results_dir']}/{config['run']}"
# shared_prefix [OURS]: a study run's base folder that holds data/, pretrain/ and round 0
# (conta_core.infra.layout, rules/study.smk); null for a run of its own.
SHARED = config.get("shared_prefix")
L = RunLayout(R, shared=SHARED)
T = int(config["rounds"])
SHARDS = list(range(int(config["shards"])))
CONDA_ENV = "../envs/conta.yaml"  # `conda:` of every script rule (relative to rules/)
MANIFEST = L.manifest
CONTA = config["context"]["mode"] in ACTIVE_MODES  # modes with the context module
# the seed method's registry entry (conta_core.infra.methods)
METHOD = method(config["method"])
AMN = METHOD.name == "amn"
SEAM = METHOD.name == "seam"
GPU = int(
    config["gpus_per_job"]
)  # `gpu` resource of GPU rules (0 on CPU-only clusters)
# Without GT masks (a folder dataset without masks_dir) no evaluation job is planned: the
# round targets build the pseudo-masks, segmentation model, predictions and confounder sets,
# and the summary records "no ground truth" (conta_core.report.summary).
HAS_GT = has_ground_truth(config)
# pretrain.enabled (synthetic data): the sections with `pretrained: null` start from the
# generated weights in pretrain/<backbone>.pth (pretrain.backbone for the classifier and
# segmentation, ResNet-38 for SEAM); CFG (the config the rules pass on) names each section's file.
PRETRAIN_WEIGHTS = {s: L.pretrain(b) for s, b in pretrain_targets(config).items()}
CFG = with_pretrain(config, PRETRAIN_WEIGHTS)
# --cfg of every method-dependent rule by its name (conta_core.infra.rule_configs), the step
# rules train_cls, make_cam, make_ir_label and random_walk (their scripts call the method's step
# functions) and the method's own rules (rules/<method>.smk)
RULE_JSON = {k: json.dumps(v, sort_keys=True) for k, v in rule_configs(CFG).items()}

# --cfg of the figure scripts: the `report` section (they rerun when it changes).
REPORT_JSON = json.dumps(config["report"], sort_keys=True)
LOSS_STAGES = list(METHOD.models)
MASK_EVALS = [
    "pseudo_mask",
    "seg_train",
    "seg_val",
]  # EVALS names of the mask evaluations


def pretrain_input(section: str) -> list[str]:
    """[the generated weights] when `section` starts from them, else []."""
    return [PRETRAIN_WEIGHTS[section]] if section in PRETRAIN_WEIGHTS else []


def pretrain_json(wildcards) -> str:
    """The `pretrain` section with the job's backbone ({backbone} of pretrain/<backbone>.pth)."""
    return json.dumps(
        {**CFG.get("pretrain", {}), "backbone": wildcards.backbone}, sort_keys=True
    )


def section_json(section: str) -> str:
    """One config section as a JSON object (the step's own settings)."""
    return json.dumps(CFG[section], sort_keys=True)


def run_dir_param(wildcards, output) -> str:
    """The run folder of a job's first output (not R: a job's params follow its own files)."""
    return RunLayout.run_of(output[0])


def shared_dir_param(wildcards):
    """The base run folder holding round 0 (a study run, config shared_prefix), else None."""
    return SHARED


def data_dir_param(wildcards, output) -> str:
    return os.path.dirname(output[0])


def round_seed(w) -> int:
    """Seed of round w.t's training steps: config `seed` + t, or `seed` with seed_per_round false."""
    return config["seed"] + (int(w.t) if config["seed_per_round"] else 0)


def round_of(w) -> int:
    return int(w.t)


def rounds_of(w) -> list[int]:
    """Rounds 0..t (the summary and figure scripts' --rounds)."""
    return list(range(int(w.t) + 1))


# --- context (rounds t > 0) ----------------------------------------------------------------


def xm_dirs(t: int | str) -> list[str]:
    """Folders of X_m for round t: round t-1's masks (none for round 0 or context: none)."""
    t = int(t)
    if t == 0 or not CONTA:
        return []
    if config["context"]["confounder_source"] == "pseudo":
        return L.shard_dirs(t - 1, "pseudo_mask", SHARDS)
    return L.shard_dirs(t - 1, "seg_pred_train", SHARDS)


def confounder_input(t: int | str) -> list[str]:
    """Confounder set of round t-1 that round t's context map attends over (t > 0, conta)."""
    t = int(t)
    return [L.confounder(t - 1)] if t > 0 and CONTA else []


def xm_of(w) -> list[str]:
    return xm_dirs(w.t)


def confounder_of(w) -> list[str]:
    return confounder_input(w.t)


def confounder_masks_of(w) -> list[str]:
    """Masks the confounder set of round t averages: segmentation predictions or pseudo-masks."""
    stage = (
        "pseudo_mask"
        if config["context"]["confounder_source"] == "pseudo"
        else "seg_pred_train"
    )
    return L.shard_dirs(w.t, stage, SHARDS)


# --- per-image stages ----------------------------------------------------------------------
# A per-shard job of the train split (make_ir_label, random_walk, make_amn_cam,
# make_amn_ir_label: wildcard `shard`) reads only its own shard of the previous per-image
# step: every such step shards the same sorted train ids the same way (conta_core.infra.shards), so
# shard k's images are all in shard k's folder. Shard k can start as soon as its own input
# shard is done, and the DAG has one edge per shard instead of shards^2 (1327 jobs at 64
# shards). A job without the wildcard (eval_cam, train_irn, ...) reads every shard. X_m is
# not narrowed (xm_of): the placebo context reads a partner image's X_m from any shard.


def shards_of(w) -> list:
    """[w.shard] for a per-shard job, else every shard."""
    return [w.shard] if "shard" in w.keys() else SHARDS


def cams_of(w) -> list[str]:
    return L.shard_dirs(w.t, "cam", shards_of(w))


def ir_labels_of(w) -> list[str]:
    return L.shard_dirs(w.t, "ir_label", shards_of(w))


def amn_cams_of(w) -> list[str]:
    return L.shard_dirs(w.t, "amn_cam", shards_of(w))


def seed_labels_of(w) -> list[str]:
    """IR label folders IRNet trains on: ir_label (irn) or amn_ir_label (amn)."""
    return L.shard_dirs(w.t, METHOD.seed_labels or "ir_label", shards_of(w))


def walk_cams_of(w) -> list[str]:
    """Map folders the random walk propagates: cam (irn, seam) or amn_cam (amn)."""
    return L.shard_dirs(w.t, METHOD.walk_maps, shards_of(w))


def pseudo_masks_of(w) -> list[str]:
    return L.shard_dirs(w.t, "pseudo_mask", SHARDS)


def seg_preds_of(w) -> list[str]:
    return [L.seg_pred_dir(w.t, w.split, s) for s in SHARDS]


def confounding_preds_of(w) -> list[str]:
    """Shard folders of the stage the confounding measures read (CONFOUNDING_STAGES)."""
    if w.stage == "cam":
        return cams_of(w)
    if w.stage == "pseudo_mask":
        return pseudo_masks_of(w)
    return [L.seg_pred_dir(w.t, w.stage.removeprefix("seg_"), s) for s in SHARDS]


def confounding_split_of(w) -> str:
    """The manifest split a stage is measured on: val for seg_val, else train_eval."""
    return "val" if w.stage == "seg_val" else "train_eval"


def seg_stage_of(w) -> str:
    return f"seg_{w.split}"


def eval_split_of(w) -> str:
    """The manifest split scored for seg_pred/<split>: train_eval for train, else the split."""
    return "train_eval" if w.split == "train" else w.split


# --- summaries and figures ---------------------------------------------------------------


def round_products(t: int | str) -> list[str]:
    """What round t makes when nothing can be scored (no GT): pseudo-masks, the segmentation
    model and its predictions on train and val (the confounder set of round t-1 comes in
    through round t's context inputs, as with GT)."""
    files = L.shard_dirs(t, "pseudo_mask", SHARDS) + [L.model(t, "seg")]
    return (
        files
        + L.shard_dirs(t, "seg_pred_train", SHARDS)
        + L.shard_dirs(t, "seg_pred_val", SHARDS)
    )


def round_evals(t: int | str) -> list[str]:
    """Every file of rounds 0..t that a summary table reads: the evaluation CSVs (with GT),
    else the round products; the context diagnostics of context rounds."""
    files = []
    for r in range(int(t) + 1):
        if HAS_GT:
            files += [
                L.eval_csv(r, n) for n in ("cam", "pseudo_mask", "seg_val", "seg_train")
            ]
            # the method's own tables (amn: the AMN map sweep, summary columns amn_cam_*)
            files += [L.eval_csv(r, e) for e in METHOD.evals]
            # the confounding measures (summary columns cf_*, conta_core.evaluation.confounding)
            files += [L.confounding(r, s) for s in CONFOUNDING_STAGES]
        else:
            files += round_products(r)
        if (
            CONTA and r > 0 and METHOD.diagnostics
        ):  # summary columns ctx_* (the classifier's context)
            files.append(L.diagnostics(r))
    return files


def round_evals_of(w) -> list[str]:
    return round_evals(w.t)


def figure_files(t: int | str) -> list[str]:
    """All report figures and tables of round t (cumulative over rounds 0..t)."""
    t = int(t)
    names = [
        "samples",
        "miou.png",
        "confounding.png",
        "cam_sweep.png",
        "train_loss.png",
        "summary.csv",
        "per_class_iou.csv",
    ]
    if not HAS_GT:  # the score figures need evaluations
        names = ["samples", "train_loss.png", "summary.csv"]
    files = [L.figure(t, n) for n in names]
    if CONTA:
        files += [L.figure(r, "confounder.png") for r in range(t)]
    return files


def sample_inputs_of(w) -> list[str]:
    """Every artifact the overview grids of rounds 0..t read (so they are rendered last)."""
    files = [MANIFEST]
    for r in range(int(w.t) + 1):
        for stage in ("cam", "ir_label", "pseudo_mask", "seg_pred_train"):
            files += L.shard_dirs(r, stage, SHARDS)
        if r > 0 and CONTA:
            files.append(L.model(r, "cls"))
    return files


def loss_logs_of(w) -> list[str]:
    """Training logs of every model of rounds 0..t (the figure labels come from the paths)."""
    return [L.train_log(r, m) for r in range(int(w.t) + 1) for m in LOSS_STAGES]


def iou_evals_of(w) -> list[str]:
    """Evaluation tables (CAM and masks) of rounds 0..t."""
    return [L.eval_csv(r, n) for r in range(int(w.t) + 1) for n in ["cam", *MASK_EVALS]]


def cam_evals_of(w) -> list[str]:
    return [L.eval_csv(r, "cam") for r in range(int(w.t) + 1)]
