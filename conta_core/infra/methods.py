"""The one registry of seed methods and context modes: what every layer reads.

The schema's `method` / `context.mode` enums (tests/test_methods.py checks them against this
file), conta_core.infra.layout (which artifacts a method makes), conta_core.infra.config
(cross-key checks), models/classifier.py (modes, adjustments), the rules (rules/common.smk:
which folders feed IRNet / the walk, which model the walk reads, which logs the loss figure
shows, which rule file is active), the workflow scripts of the shared steps (which step
function they call, conta_core.script.step_function) and `conta inspect` / the report
(through the layout) read it.

Every method runs the same four step rules, one rule and one thin script each (STEP_RULES:
train_cls, make_cam, make_ir_label, random_walk; same outputs for every method); the entry's
`steps` names, per step, the conta_core.steps function the script calls, as a dotted
"module:function" string (this layer imports no step module; conta_core.script resolves it).
A method's step functions keep the call shape of irn's (train_seam / train_classifier,
make_seam_cams / make_cams, ...: tests/test_methods.py binds the scripts' calls to each), and
its rule --cfg objects come from conta_core.infra.rule_configs, by rule name.

Adding a method is a copy of a pattern (seam is the example of one that replaces steps, amn of
one that adds steps):
1. its steps module conta_core/steps/<name>.py: the functions of the step rules it replaces,
   with irn's call shapes, and its own steps;
2. a rule file rules/<name>.smk (included by rules/run.smk, rules under `if METHOD.name ==
   ...`) only if it has steps of its own (seam: train_aff; amn: train_amn, make_amn_cam, ...),
   each with a thin script in workflow_scripts/;
3. its config section + config/schema.yaml + config/README.md keys, and its rules' --cfg
   objects: a `<name>_rule_configs` in conta_core.infra.rule_configs (METHOD_RULE_CONFIGS),
   keyed by rule name;
4. one entry here (and its own artifacts in conta_core.infra.layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTEXT_MODES = ("conta", "placebo", "none")
ACTIVE_MODES = ("conta", "placebo")  # modes with the context module (placebo: another image's X_m)
ADJUSTMENTS = ("nwgm", "exact")  # context.adjustment: NWGM approximation (paper) | exact backdoor sum
INJECTS = ("m", "xm")  # context.inject: M (the paper) | X_m itself (the paper's Table 1 Q1 ablation)
CONTEXT_BLOCKS = (2, 3, 4, 5)  # context.block: the ResNet blocks that can receive M
ALL_BLOCKS = (*CONTEXT_BLOCKS, "dense")  # "dense": all of them

STEP_RULES = ("train_cls", "make_cam", "make_ir_label", "random_walk")
"""The step rules every method runs (rules/classify.smk, rules/pseudo_mask.smk): one rule and
one workflow script each, the step function from the method's entry (Method.steps)."""

IRN_STEPS = {
    "train_cls": "conta_core.steps.train_cls:train_classifier",
    "make_cam": "conta_core.steps.cam:make_cams",
    "make_ir_label": "conta_core.steps.ir_label:make_ir_labels",
    "random_walk": "conta_core.steps.random_walk:make_pseudo_masks",
}
"""irn's step functions (IRNet: CAM classifier, CAMs, CRF IR labels, boundary-net walk)."""


@dataclass(frozen=True)
class Method:
    """A seed method: how a round goes from images + tags to pseudo-masks.

    section: its own config section (None: only the shared ones); models: the per-round
    models (layout MODELS names) in training order, seg last (the loss figure's stages);
    stages: its own per-image stages besides the shared cam / ir_label / pseudo_mask / seg;
    walk_maps / seed_labels: the stage the random walk propagates / IRNet trains on (None: no
    IRNet); evals: its own evaluation tables (layout EVALS); context_blocks / adjustments:
    the context.block and context.adjustment values it supports; diagnostics: whether the
    round's cls model carries the context (context_diagnostics runs on it); steps: per
    STEP_RULES rule, the "module:function" it calls; cls_section: the config section of the
    round's cls model (the key of train_cls's --cfg object the step function gets);
    walk_model: the model (layout MODELS name) random_walk reads.
    """

    name: str
    section: str | None
    models: tuple[str, ...]
    stages: tuple[str, ...] = ()
    walk_maps: str = "cam"
    seed_labels: str | None = "ir_label"
    evals: tuple[str, ...] = ()
    context_blocks: tuple = ALL_BLOCKS
    adjustments: tuple[str, ...] = ADJUSTMENTS
    diagnostics: bool = True
    steps: dict[str, str] = field(default_factory=lambda: dict(IRN_STEPS))
    cls_section: str = "classifier"
    walk_model: str = "irn"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("irn", None, ("cls", "irn", "seg")),
        Method(
            "amn",
            "amn",
            ("cls", "amn", "irn", "seg"),
            stages=("amn_cam", "amn_ir_label"),
            walk_maps="amn_cam",
            seed_labels="amn_ir_label",
            evals=("amn_cam",),
            adjustments=("nwgm",),  # the AMN head is not linear in M
            diagnostics=False,  # the context sits in AMN, not in the cls model
        ),
        Method(
            "seam",
            "seam",
            ("cls", "aff", "seg"),
            seed_labels=None,
            context_blocks=(5,),
            steps={
                "train_cls": "conta_core.steps.seam:train_seam",
                "make_cam": "conta_core.steps.seam:make_seam_cams",
                "make_ir_label": "conta_core.steps.seam:make_seam_crf_labels",  # la / ha CRF labels
                "random_walk": "conta_core.steps.seam:make_seam_pseudo_masks",  # AffinityNet's walk
            },
            cls_section="seam",
            walk_model="aff",
        ),
    )
}
METHOD_NAMES = tuple(METHODS)


def method(name: str) -> Method:
    """The registry entry of `name`; ValueError naming config key `method` otherwise."""
    if name not in METHODS:
        raise ValueError(f"config key method: {name!r} is not one of {METHOD_NAMES}")
    return METHODS[name]
