"""The --cfg object of every method-specific rule, from the whole config (the rules layer).

rules/common.smk turns these into the rules' `cfg` params (JSON): a rule reruns when its
object changes, so each holds exactly the keys its step reads. Plain dict manipulation; no
step module is imported (the rules stay above the library).
"""

from __future__ import annotations

POST_KEYS = ("eval_threshold", "ir_fg_threshold", "ir_bg_threshold", "rw_power", "inference_dropout")
"""amn.* keys used after training (inference, evaluation, IR labels, walk), not by train_amn:
changing them does not retrain AMN."""

SEAM_POST_KEYS = ("cam_scales", "cam_flip", "crf_alphas", "crf", "aff", "walk")
"""seam.* keys used after train_seam: changing them does not retrain SEAM."""


def amn_rule_configs(config: dict) -> dict[str, dict]:
    """The --cfg object of every AMN rule (method amn):

    train: the amn training/model keys (all but POST_KEYS) and the context section;
    infer: make_amn_cam, the cam section's scales, flip and resize and amn.inference_dropout;
    eval: eval_amn_cam, the cam sweep with amn.eval_threshold (same CSV layout as eval_cam);
    ir_label: make_amn_ir_label, the ir_label section (CRF) with AMN's thresholds.
    """
    amn = config["amn"]
    return {
        "train": {"amn": {k: v for k, v in amn.items() if k not in POST_KEYS}, "context": config["context"]},
        "infer": {
            "scales": config["cam"]["scales"],
            "flip": config["cam"]["flip"],
            "resize": config["cam"]["resize"],
            "inference_dropout": amn.get("inference_dropout", False),
        },
        "eval": {**config["cam"], "eval_threshold": amn["eval_threshold"]},
        "ir_label": {
            **config["ir_label"],
            "fg_threshold": amn["ir_fg_threshold"],
            "bg_threshold": amn["ir_bg_threshold"],
        },
    }


def seam_rule_configs(config: dict) -> dict[str, dict]:
    """The --cfg object of every SEAM rule (method seam, rules/seam.smk):

    train: train_seam, the seam training keys (all but SEAM_POST_KEYS) and the context section;
    cam: make_seam_cam (cam_scales, cam_flip); crf: make_seam_crf_label (crf_alphas, crf);
    aff: train_aff, the seam training keys with the aff subsection; walk: seam_random_walk.
    """
    seam = config["seam"]
    train = {k: v for k, v in seam.items() if k not in SEAM_POST_KEYS}
    return {
        "train": {"seam": train, "context": config["context"]},
        "cam": {"cam_scales": seam["cam_scales"], "cam_flip": seam["cam_flip"]},
        "crf": {"crf_alphas": seam["crf_alphas"], "crf": seam["crf"]},
        "aff": {**train, "aff": seam["aff"]},
        "walk": dict(seam["walk"]),
    }


def rule_configs(config: dict) -> dict[str, dict]:
    """The method's rule --cfg objects ({} for irn)."""
    if config["method"] == "amn":
        return amn_rule_configs(config)
    if config["method"] == "seam":
        return seam_rule_configs(config)
    return {}


def random_walk_config(config: dict) -> dict:
    """--cfg of random_walk: the random_walk section, plus cam_power = amn.rw_power with
    method amn (the walk starts from amn_cam ** rw_power)."""
    if config["method"] != "amn":
        return dict(config["random_walk"])
    return {**config["random_walk"], "cam_power": config["amn"]["rw_power"]}
