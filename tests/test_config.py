"""Config validation: schema errors and cross-key checks name the offending key."""

from __future__ import annotations

import pytest
from conftest import REPO as REPO_ROOT

from conta_core.infra.config import DEFAULT_CONFIG, ConfigError, deep_merge, load_config, load_yaml


def test_default_config_is_valid():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg["dataset"]["kind"] == "synthetic"
    assert cfg["rounds"] == 3


@pytest.mark.parametrize(
    "override, key",
    [
        ({"classifier": {"bakbone": "resnet18"}}, "bakbone"),
        ({"shards": 0}, "shards"),
        ({"device": "gpu"}, "device"),
        ({"context": {"block": 6}}, "context.block"),
        ({"cam": {"scales": []}}, "cam.scales"),
        ({"method": "sec"}, "method"),
        ({"loader_workers": -1}, "loader_workers"),
    ],
)
def test_schema_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEFAULT_CONFIG, override)


def test_missing_dataset_root_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.root"):
        load_config(DEFAULT_CONFIG, {"dataset": {"kind": "voc12", "root": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"dataset\.root: required"):
        load_config(DEFAULT_CONFIG, {"dataset": {"kind": "folder", "root": None}})


def test_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"classifier\.pretrained"):
        load_config(DEFAULT_CONFIG, {"classifier": {"pretrained": str(tmp_path / "w.pth")}})


def test_cross_key_checks():
    with pytest.raises(ConfigError, match=r"classifier\.scale_range"):
        load_config(DEFAULT_CONFIG, {"classifier": {"scale_range": [1.5, 0.5]}})
    with pytest.raises(ConfigError, match=r"ir_label\.bg_threshold"):
        load_config(DEFAULT_CONFIG, {"ir_label": {"bg_threshold": 0.5, "fg_threshold": 0.3}})
    with pytest.raises(ConfigError, match=r"irn\.backbone"):
        load_config(DEFAULT_CONFIG, {"irn": {"backbone": "resnet50"}})


def test_overlays_are_valid_once_paths_exist(tmp_path):
    base = load_yaml(DEFAULT_CONFIG)
    for name in ("voc12.yaml", "coco14.yaml"):
        over = load_yaml(DEFAULT_CONFIG.parent / name)
        over = deep_merge(over, {"dataset": {"root": str(tmp_path), "sbd_root": None}})
        if name == "coco14.yaml":
            over = deep_merge(load_yaml(DEFAULT_CONFIG.parent / "voc12.yaml"), over)
        over = deep_merge(over, {"irn": {"backbone_init": "classifier"}})
        load_config(DEFAULT_CONFIG, deep_merge(base, over))


def test_amn_checks():
    with pytest.raises(ConfigError, match=r"amn\.ir_bg_threshold"):
        load_config(DEFAULT_CONFIG, {"method": "amn", "amn": {"ir_bg_threshold": 0.9, "ir_fg_threshold": 0.3}})
    with pytest.raises(ConfigError, match=r"amn\.backbone"):
        load_config(DEFAULT_CONFIG, {"method": "amn", "amn": {"backbone": "resnet50"}})
    with pytest.raises(ConfigError, match=r"amn\.lr_typo|lr_typo"):
        load_config(DEFAULT_CONFIG, {"amn": {"lr_typo": 1}})


def test_pretrain_checks(tmp_path):
    from conta_core.infra.config import pretrain_targets

    assert pretrain_targets(load_config(DEFAULT_CONFIG)) == {"classifier": "resnet18", "segmentation": "resnet18"}
    with pytest.raises(ConfigError, match=r"segmentation\.backbone: resnet34 differs from pretrain\.backbone"):
        load_config(DEFAULT_CONFIG, {"segmentation": {"backbone": "resnet34"}})
    weights = tmp_path / "r34.pth"
    weights.write_bytes(b"")
    cfg = load_config(DEFAULT_CONFIG, {"segmentation": {"backbone": "resnet34", "pretrained": str(weights)}})
    assert pretrain_targets(cfg) == {"classifier": "resnet18"}  # its own weights: no pretrain for segmentation
    with pytest.raises(ConfigError, match=r"pretrain\.enabled"):
        load_config(DEFAULT_CONFIG, {"dataset": {"kind": "folder", "root": str(tmp_path), "csv": None}})
    with pytest.raises(ConfigError, match=r"pretrain\.object_frac"):
        load_config(DEFAULT_CONFIG, {"pretrain": {"object_frac": [0.0, 0.5]}})
    assert pretrain_targets(load_config(DEFAULT_CONFIG, {"pretrain": {"enabled": False}})) == {}
    # method seam: SEAM's ResNet-38 at seam.width, and AffinityNet's when it starts from pre-training
    seam = load_config(DEFAULT_CONFIG, {"method": "seam", "seam": {"width": 0.25}})
    assert pretrain_targets(seam)["seam"] == "resnet38_w0.25" and "seam.aff" not in pretrain_targets(seam)
    aff = load_config(DEFAULT_CONFIG, {"method": "seam", "seam": {"aff": {"backbone_init": "pretrained"}}})
    assert pretrain_targets(aff)["seam.aff"] == pretrain_targets(aff)["seam"] == "resnet38_w0.125"
    own = load_config(DEFAULT_CONFIG, {"method": "seam", "seam": {"pretrained": str(weights)}})
    assert "seam" not in pretrain_targets(own)


def test_require_keys_names_the_section_key_and_every_missing_one():
    from conta_core.infra.config import require_keys

    require_keys({"a": 1, "b": 2}, ("a", "b"), "irn")  # nothing missing: no error
    with pytest.raises(ConfigError, match=r"^config key irn\.b: missing \(needed keys: b, c\)$"):
        require_keys({"a": 1}, ("a", "b", "c"), "irn")
    with pytest.raises(ValueError, match=r"config key cam\.flip: missing .*\(make_amn_cam uses the cam scales\)"):
        require_keys({}, ("flip",), "cam", why="make_amn_cam uses the cam scales")


# Section keys the library lists as required (for direct use without Snakemake) must be required
# by the schema too, and config/config.yaml must give every schema key of a section a default:
# one source of required keys (the schema) and one of defaults (config.yaml, always loaded first).
OPTIONAL_WITHOUT_DEFAULT = {
    "classifier": {"output_stride"},  # code default 16 (IRNet); documented in config/README.md
    "context": {"inject"},  # code default m; absent so that existing runs' train_cls params stay the same
}


def _library_keys() -> dict[str, tuple[str, ...]]:
    from conta_core.steps.amn import TRAIN_KEYS
    from conta_core.steps.irn import IRN_KEYS
    from conta_core.steps.pretrain import CFG_KEYS
    from conta_core.steps.segment import _TRAIN_KEYS
    from conta_core.steps.train_cls import CLS_KEYS

    return {
        "classifier": CLS_KEYS,
        "segmentation": _TRAIN_KEYS,
        "irn": IRN_KEYS,
        "amn": TRAIN_KEYS,
        "pretrain": CFG_KEYS,
    }


def test_schema_requires_every_key_the_library_requires():
    import yaml

    schema = yaml.safe_load((REPO_ROOT / "config/schema.yaml").read_text())["properties"]
    for section, keys in _library_keys().items():
        missing = sorted(set(keys) - set(schema[section].get("required", [])))
        assert not missing, f"schema {section}.required lacks {missing}"


def test_config_yaml_gives_every_schema_key_a_default():
    import yaml

    schema = yaml.safe_load((REPO_ROOT / "config/schema.yaml").read_text())
    cfg = yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text())
    assert not sorted(set(schema["required"]) - set(cfg))
    for section, spec in schema["properties"].items():
        if spec.get("type") != "object" or section not in cfg or section == "amn":  # amn: config/amn overlays
            continue
        props = set(spec.get("properties", {})) - OPTIONAL_WITHOUT_DEFAULT.get(section, set())
        assert not sorted(props - set(cfg[section] or {})), (
            f"config.yaml {section} lacks {sorted(props - set(cfg[section]))}"
        )


def test_with_pretrain_names_the_weights_in_a_copy():
    from conta_core.infra.config import load_config, with_pretrain

    cfg = load_config(overrides={"method": "seam"})
    r18, r38 = "results/x/pretrain/resnet18.pth", "results/x/pretrain/resnet38_w0.125.pth"
    out = with_pretrain(cfg, {"classifier": r18, "segmentation": r18, "seam": r38, "seam.aff": r38})
    assert out["classifier"]["pretrained"] == out["segmentation"]["pretrained"] == r18
    assert out["seam"]["pretrained"] == out["seam"]["aff"]["pretrained"] == r38
    assert cfg["classifier"]["pretrained"] is None and cfg["seam"]["pretrained"] is None  # loaded config as it is
    assert out["irn"]["pretrained"] is None  # IRN starts from the classifier


def test_inject_xm_is_refused_with_exact_and_bad_values_name_the_key():
    from conta_core.infra.config import ConfigError, load_config

    assert load_config(overrides={"context": {"inject": "xm"}})["context"]["inject"] == "xm"
    with pytest.raises(ConfigError, match="context.inject"):
        load_config(overrides={"context": {"inject": "xm", "adjustment": "exact"}})
    with pytest.raises(ConfigError, match="context.inject"):
        load_config(overrides={"context": {"inject": "mask"}})


def test_exact_adjustment_is_refused_for_amn():
    from conta_core.infra.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="context.adjustment"):
        load_config(overrides={"method": "amn", "context": {"adjustment": "exact"}})  # checks the config


def test_exact_adjustment_away_from_block_5_is_refused_by_the_config_check():
    """Before round 0 runs, not at round 1's train_cls (the model refuses it too)."""
    from conta_core.infra.config import ConfigError, load_config
    from conta_core.models.classifier import validate_context_cfg

    for five in (5, 5.0):  # the schema's enum takes 5.0 as 5
        assert load_config(overrides={"context": {"adjustment": "exact", "block": five}})["context"]["block"] == 5
    for block in (4, "dense"):
        with pytest.raises(ConfigError, match="context.adjustment.*exact needs context.block 5"):
            load_config(overrides={"context": {"adjustment": "exact", "block": block}})
    ctx = load_config()["context"]
    with pytest.raises(ConfigError, match="exact needs context.block 5"):
        validate_context_cfg({**ctx, "adjustment": "exact", "block": 2})
