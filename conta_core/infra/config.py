"""Configuration loading and the checks that a JSON schema cannot express.

The Snakefile validates the config against `config/schema.yaml` (types, enums, unknown
keys) and then calls `check_config`, which checks cross-key constraints and that every
path the run needs exists, so a bad config fails before any job starts, naming the key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import yaml

from conta_core.infra.methods import ACTIVE_MODES, ADJUSTMENTS, CONTEXT_BLOCKS, INJECTS, method

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


def config_error(key: str, problem: str) -> ConfigError:
    """The one format of a config error: "config key <section.key>: <problem>"."""
    return ConfigError(f"config key {key}: {problem}")


def require_keys(cfg: dict, keys: Iterable[str], section: str, why: str = "") -> None:
    """ConfigError naming the first of `keys` missing from config section `section` (and every
    missing one); `why` is appended to the message, e.g. which step needs the keys."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        suffix = f" ({why})" if why else ""
        raise config_error(f"{section}.{missing[0]}", f"missing (needed keys: {', '.join(missing)}){suffix}")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping")
    return data


def validate_schema(cfg: dict) -> None:
    """Validate against config/schema.yaml; raise ConfigError naming the key path."""
    import jsonschema

    schema = load_yaml(SCHEMA_PATH)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            key = ".".join(str(p) for p in e.absolute_path) or "<top level>"
            lines.append(str(config_error(key, e.message)))
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def _check_range(cfg: dict, section: str, key: str) -> None:
    lo, hi = cfg[section][key]
    if lo > hi:
        raise config_error(f"{section}.{key}", f"lower bound {lo} > upper bound {hi}")


def _check_path(value: str | None, key: str, kind: str = "file") -> None:
    if value is None:
        return
    p = Path(value)
    ok = p.is_file() if kind == "file" else p.is_dir()
    if not ok:
        raise config_error(key, f"{kind} not found: {p}")


def check_config(cfg: dict) -> None:
    """Cross-key and filesystem checks (after the schema). Raises ConfigError naming the key."""
    ds = cfg["dataset"]
    if ds["kind"] != "synthetic":
        if not ds.get("root"):
            raise config_error("dataset.root", f"required for dataset.kind={ds['kind']}")
        _check_path(ds["root"], "dataset.root", "dir")
        for key in ("sbd_root", "masks_dir"):
            if ds.get(key):
                _check_path(ds[key], f"dataset.{key}", "dir")
        if ds.get("csv"):
            _check_path(ds["csv"], "dataset.csv")
    else:
        syn = ds.get("synthetic", {})
        if syn.get("min_objects", 1) > syn.get("max_objects", 1):
            raise config_error("dataset.synthetic.min_objects", "larger than max_objects")
        if syn.get("min_object_frac", 0) > syn.get("max_object_frac", 1):
            raise config_error("dataset.synthetic.min_object_frac", "larger than max_object_frac")
    for section in ("classifier", "irn", "segmentation"):
        _check_path(cfg[section].get("pretrained"), f"{section}.pretrained")
        if "scale_range" in cfg[section]:
            _check_range(cfg, section, "scale_range")
    if cfg["irn"]["backbone_init"] == "pretrained" and not cfg["irn"].get("pretrained"):
        raise config_error("irn.pretrained", "required when irn.backbone_init = pretrained")
    if cfg["irn"]["backbone_init"] == "classifier" and cfg["irn"]["backbone"] != cfg["classifier"]["backbone"]:
        raise config_error("irn.backbone", "must equal classifier.backbone when irn.backbone_init = classifier")
    checkpoint_settings(cfg.get("checkpoint"))  # the trainers read it at run time
    _check_method(cfg)
    _check_pretrain(cfg)
    start, stop, step = cfg["cam"]["sweep"]
    if start > stop or step <= 0:
        raise config_error("cam.sweep", "expected [start, stop >= start, step > 0]")
    if cfg["ir_label"]["bg_threshold"] > cfg["ir_label"]["fg_threshold"]:
        raise config_error("ir_label.bg_threshold", "larger than ir_label.fg_threshold")
    if cfg["segmentation"].get("infer", {}).get("crf") and "crf" not in cfg["segmentation"]:
        raise config_error("segmentation.crf", "required when segmentation.infer.crf is true")
    seg = cfg["segmentation"]
    if seg.get("resnet_style") == "caffe" and seg["backbone"] not in ("resnet50", "resnet101"):
        raise config_error(
            "segmentation.resnet_style", f"'caffe' needs backbone resnet50 or resnet101, got {seg['backbone']}"
        )


PRETRAIN_USERS = ("classifier", "segmentation")  # sections initialised from pretrain/<pretrain.backbone>.pth


def resnet38_tag(width: float) -> str:
    """The generated pre-training's name for ResNet-38 at `width` (SEAM's trunk): "resnet38_w0.125"."""
    return f"resnet38_w{float(width)!r}"


def pretrain_targets(cfg: dict) -> dict[str, str]:
    """Config sections that start from the generated pre-training (pretrain.enabled and their
    `pretrained` null), each with the backbone it needs, in pretrain/<backbone>.pth:
    classifier and segmentation pretrain.backbone; with method seam, `seam` (and `seam.aff`
    with backbone_init pretrained) ResNet-38 at seam.width (resnet38_tag)."""
    if not cfg.get("pretrain", {}).get("enabled"):
        return {}
    out = {s: cfg["pretrain"]["backbone"] for s in PRETRAIN_USERS if not cfg[s].get("pretrained")}
    seam = cfg.get("seam")
    if cfg.get("method") == "seam" and seam:
        tag = resnet38_tag(seam["width"])
        if not seam.get("pretrained"):
            out["seam"] = tag
        aff = seam.get("aff", {})
        if aff.get("backbone_init") == "pretrained" and not aff.get("pretrained"):
            out["seam.aff"] = tag
    return out


def _check_pretrain(cfg: dict) -> None:
    pre = cfg.get("pretrain", {})
    if not pre.get("enabled"):
        return
    if cfg["dataset"]["kind"] != "synthetic":
        raise config_error(
            "pretrain.enabled",
            "the generated pre-training only stands in for ImageNet on "
            "dataset.kind synthetic; set it to false and give ImageNet weights via the `pretrained:` keys",
        )
    for section in [s for s in pretrain_targets(cfg) if s in PRETRAIN_USERS]:
        if cfg[section]["backbone"] != pre["backbone"]:
            raise config_error(
                f"{section}.backbone",
                f"{cfg[section]['backbone']} differs from pretrain.backbone "
                f"{pre['backbone']} (set {section}.pretrained, or make them equal)",
            )
    lo, hi = pre["object_frac"]
    if not 0 < lo <= hi:
        raise config_error("pretrain.object_frac", "need 0 < low <= high")


def context_inject(ctx: dict) -> str:
    """context.inject ("m" when absent, see config/config.yaml); ConfigError naming the key for a
    value outside INJECTS or "xm" with adjustment exact (no strata to sum over). The config
    check and the models' validate_context_cfg both call it."""
    inject = ctx.get("inject", "m")
    if inject not in INJECTS:
        raise config_error("context.inject", f"expected one of {INJECTS}, got {inject!r}")
    if inject != "m" and ctx.get("adjustment", "nwgm") == "exact":
        raise config_error("context.inject", "xm (X_m itself in M's place) has no strata for adjustment exact")
    return inject


def parse_blocks(block: int | str) -> tuple[int, ...]:
    """context.block -> the blocks that receive M: 2..5 or "dense" (all of 2..5)."""
    if block == "dense":
        return CONTEXT_BLOCKS
    try:
        b = int(block)
    except (TypeError, ValueError):
        b = None
    if b not in CONTEXT_BLOCKS:
        raise config_error("context.block", f"expected one of {CONTEXT_BLOCKS} or 'dense', got {block!r}")
    return (b,)


def context_adjustment(ctx: dict) -> str:
    """context.adjustment ("nwgm" when absent); ConfigError naming the key for a value outside
    ADJUSTMENTS or "exact" at a context.block other than 5 (its per-stratum head is evaluated on
    the block-5 features). The config check and the models' validate_context_cfg both call it,
    so the mistake stops the run before round 0, not at round 1's train_cls."""
    adjustment = ctx.get("adjustment", "nwgm")
    if adjustment not in ADJUSTMENTS:
        raise config_error("context.adjustment", f"expected one of {ADJUSTMENTS}, got {adjustment!r}")
    if adjustment == "exact" and parse_blocks(ctx.get("block")) != (5,):
        raise config_error(
            "context.adjustment",
            f"exact needs context.block 5 (got {ctx.get('block')!r}): "
            "the per-stratum head is evaluated on the block-5 features",
        )
    return adjustment


def _check_method(cfg: dict) -> None:
    """The method's own section and the context settings it supports (conta_core.infra.methods)."""
    m = method(cfg["method"])
    if m.section is not None and not cfg.get(m.section):
        raise config_error(m.section, f"required when method = {m.name}")
    ctx = cfg["context"]
    if ctx.get("mode") in ACTIVE_MODES:
        if ctx.get("block") not in m.context_blocks:
            raise config_error(
                "context.block", f"method {m.name} injects M at block(s) {list(m.context_blocks)}, got {ctx['block']!r}"
            )
        adjustment = context_adjustment(ctx)
        if adjustment not in m.adjustments:
            raise config_error(
                "context.adjustment", f"method {m.name} implements only {list(m.adjustments)}, got {adjustment!r}"
            )
        context_inject(ctx)
    if m.name == "amn":
        _check_amn(cfg)
    if m.name == "seam":
        seam = cfg["seam"]
        _check_range(cfg, "seam", "scale_range")
        _check_path(seam.get("pretrained"), "seam.pretrained")
        _check_path(seam["aff"].get("pretrained"), "seam.aff.pretrained")
        if (
            seam["aff"]["backbone_init"] == "pretrained"
            and not seam["aff"].get("pretrained")
            and "seam.aff" not in pretrain_targets(cfg)
        ):
            raise config_error(
                "seam.aff.pretrained", "required when seam.aff.backbone_init = pretrained (without pretrain.enabled)"
            )


def _check_amn(cfg: dict) -> None:
    amn = cfg.get("amn")
    if not amn:
        raise config_error("amn", "required when method = amn")
    _check_range(cfg, "amn", "scale_range")
    _check_path(amn.get("pretrained"), "amn.pretrained")
    if amn["backbone_init"] == "pretrained" and not amn.get("pretrained"):
        raise config_error("amn.pretrained", "required when amn.backbone_init = pretrained")
    if amn["backbone_init"] == "classifier" and amn["backbone"] != cfg["classifier"]["backbone"]:
        raise config_error("amn.backbone", "must equal classifier.backbone when amn.backbone_init = classifier")
    if amn["ir_bg_threshold"] > amn["ir_fg_threshold"]:
        raise config_error("amn.ir_bg_threshold", "larger than amn.ir_fg_threshold")


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: dict | None = None) -> dict:
    """Load a YAML config, deep-merge `overrides`, validate schema + cross-key checks."""
    cfg = load_yaml(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    validate_schema(cfg)
    check_config(cfg)
    return cfg


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` merged into `base` recursively (over wins)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


CHECKPOINT_DEFAULTS = {"every": 0, "minutes": 10.0, "keep": False}  # config section `checkpoint`


def checkpoint_settings(cfg: dict | None) -> dict:
    """The `checkpoint` config section with defaults filled in; ValueError naming a bad key."""
    out = dict(CHECKPOINT_DEFAULTS)
    for key, value in (cfg or {}).items():
        if key not in out:
            raise config_error(f"checkpoint.{key}", f"unknown (known: {', '.join(out)})")
        out[key] = value
    if not isinstance(out["every"], int) or isinstance(out["every"], bool) or out["every"] < 0:
        raise config_error("checkpoint.every", f"expected an integer >= 0, got {out['every']!r}")
    if not isinstance(out["minutes"], (int, float)) or out["minutes"] < 0:
        raise config_error("checkpoint.minutes", f"expected a number >= 0, got {out['minutes']!r}")
    if not isinstance(out["keep"], bool):
        raise config_error("checkpoint.keep", f"expected true or false, got {out['keep']!r}")
    return out


def has_ground_truth(cfg: dict) -> bool:
    """Whether the configured dataset has GT masks to score against: every kind but a folder
    dataset without dataset.masks_dir."""
    ds = cfg.get("dataset", {})
    return ds.get("kind") != "folder" or ds.get("masks_dir") not in (None, "")


def with_pretrain(cfg: dict, weights: dict[str, str]) -> dict:
    """A copy of cfg in which every section that starts from the generated pre-training
    (pretrain_targets; "seam.aff" is the aff subsection of seam) names its file
    weights[section] as its `pretrained` (the rules' params, hence the checkpoints, record
    it); cfg itself is left as loaded."""
    out = copy.deepcopy(cfg)
    for section, path in weights.items():
        node = out
        for key in section.split("."):
            node = node[key]
        node["pretrained"] = path
    return out
