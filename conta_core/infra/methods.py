"""The one registry of seed methods and context modes: what every layer reads.

The schema's `method` / `context.mode` enums (tests/test_methods.py checks them against this
file), conta_core.infra.layout (which artifacts a method makes), conta_core.infra.config
(cross-key checks), models/classifier.py (modes, adjustments), the rules (rules/common.smk:
which folders feed IRNet / the walk, which logs the loss figure shows, which rule file is
active) and `conta inspect` / the report (through the layout) read it.

Adding a method = one entry here, its steps module (conta_core/steps/<name>.py), its rule file
(rules/<name>.smk, included by the Snakefile, rules under `if METHOD.name == ...`), its config
section + schema + config/README.md keys, and its artifacts in conta_core.infra.layout.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTEXT_MODES = ("conta", "placebo", "none")
ACTIVE_MODES = ("conta", "placebo")  # modes with the context module (placebo: another image's X_m)
ADJUSTMENTS = ("nwgm", "exact")  # context.adjustment: NWGM approximation (paper) | exact backdoor sum
ALL_BLOCKS = (2, 3, 4, 5, "dense")


@dataclass(frozen=True)
class Method:
    """A seed method: how a round goes from images + tags to pseudo-masks.

    section: its own config section (None: only the shared ones); models: the per-round
    models (layout MODELS names) in training order, seg last (the loss figure's stages);
    stages: its own per-image stages besides the shared cam / ir_label / pseudo_mask / seg;
    walk_maps / seed_labels: the stage the random walk propagates / IRNet trains on (None: no
    IRNet); evals: its own evaluation tables (layout EVALS); context_blocks / adjustments:
    the context.block and context.adjustment values it supports; diagnostics: whether the
    round's cls model carries the context (context_diagnostics runs on it).
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
        Method("seam", "seam", ("cls", "aff", "seg"), seed_labels=None, context_blocks=(5,)),
    )
}
METHOD_NAMES = tuple(METHODS)


def method(name: str) -> Method:
    """The registry entry of `name`; ValueError naming config key `method` otherwise."""
    if name not in METHODS:
        raise ValueError(f"config key method: {name!r} is not one of {METHOD_NAMES}")
    return METHODS[name]
