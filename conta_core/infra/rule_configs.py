"""The --cfg object of every method-dependent rule, from the whole config (the rules layer).

rules/common.smk turns these into the rules' `cfg` params (JSON, RULE_JSON[<rule name>]): a
rule reruns when its object changes, so each holds exactly the keys its step reads. Plain
dict manipulation; no step module is imported (the rules stay above the library).

The step rules every method runs (conta_core.infra.methods.STEP_RULES) get irn's objects
(`step_rule_configs`) unless the method replaces them; a method's own rules get theirs from
its function here (`amn_rule_configs`, `seam_rule_configs`).
"""

from __future__ import annotations

POST_KEYS = ("eval_threshold", "ir_fg_threshold", "ir_bg_threshold", "rw_power", "inference_dropout")
"""amn.* keys used after training (inference, evaluation, IR labels, walk), not by train_amn:
changing them does not retrain AMN."""

SEAM_POST_KEYS = ("cam_scales", "cam_flip", "crf_alphas", "crf", "aff", "walk")
"""seam.* keys used after training SEAM (train_cls): changing them does not retrain SEAM."""


def step_rule_configs(config: dict) -> dict[str, dict]:
    """irn's --cfg objects of the step rules: train_cls the classifier and context sections,
    make_cam the cam section, make_ir_label the ir_label section, random_walk the
    random_walk section. `config` names the generated pre-training weights where a section
    starts from them (conta_core.infra.config.with_pretrain)."""
    return {
        "train_cls": {"classifier": config["classifier"], "context": config["context"]},
        "make_cam": config["cam"],
        "make_ir_label": config["ir_label"],
        "random_walk": dict(config["random_walk"]),
    }


def amn_rule_configs(config: dict) -> dict[str, dict]:
    """The --cfg object of every AMN rule (method amn, rules/amn.smk) and of random_walk:

    train_amn: the amn training/model keys (all but POST_KEYS) and the context section;
    make_amn_cam: the cam section's scales, flip and resize and amn.inference_dropout;
    eval_amn_cam: the cam sweep with amn.eval_threshold (same CSV layout as eval_cam);
    make_amn_ir_label: the ir_label section (CRF) with AMN's thresholds;
    random_walk: the random_walk section plus cam_power = amn.rw_power (the walk starts from
    amn_cam ** rw_power).
    """
    amn = config["amn"]
    return {
        "train_amn": {"amn": {k: v for k, v in amn.items() if k not in POST_KEYS}, "context": config["context"]},
        "make_amn_cam": {
            "scales": config["cam"]["scales"],
            "flip": config["cam"]["flip"],
            "resize": config["cam"]["resize"],
            "inference_dropout": amn.get("inference_dropout", False),
        },
        "eval_amn_cam": {**config["cam"], "eval_threshold": amn["eval_threshold"]},
        "make_amn_ir_label": {
            **config["ir_label"],
            "fg_threshold": amn["ir_fg_threshold"],
            "bg_threshold": amn["ir_bg_threshold"],
        },
        "random_walk": {**config["random_walk"], "cam_power": amn["rw_power"]},
    }


def seam_rule_configs(config: dict) -> dict[str, dict]:
    """The --cfg object of every SEAM rule (method seam: its steps in the step rules, and
    train_aff in rules/seam.smk):

    train_cls (train_seam): the seam training keys (all but SEAM_POST_KEYS) and the context
    section; make_cam (make_seam_cams): cam_scales, cam_flip; make_ir_label
    (make_seam_crf_labels): crf_alphas, crf; train_aff: the seam training keys with the aff
    subsection; random_walk (make_seam_pseudo_masks): the seam.walk subsection.
    """
    seam = config["seam"]
    train = {k: v for k, v in seam.items() if k not in SEAM_POST_KEYS}
    return {
        "train_cls": {"seam": train, "context": config["context"]},
        "make_cam": {"cam_scales": seam["cam_scales"], "cam_flip": seam["cam_flip"]},
        "make_ir_label": {"crf_alphas": seam["crf_alphas"], "crf": seam["crf"]},
        "train_aff": {**train, "aff": seam["aff"]},
        "random_walk": dict(seam["walk"]),
    }


METHOD_RULE_CONFIGS = {"amn": amn_rule_configs, "seam": seam_rule_configs}


def rule_configs(config: dict) -> dict[str, dict]:
    """The --cfg object of every method-dependent rule of config's method, by rule name:
    the step rules (irn's objects, or the method's) and the method's own rules."""
    own = METHOD_RULE_CONFIGS.get(config["method"])
    return {**step_rule_configs(config), **(own(config) if own else {})}
