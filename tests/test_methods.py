"""The method registry (conta_core.infra.methods) is the one list: the schema and the checks follow it."""

from __future__ import annotations

import pytest
import yaml

from conta_core.infra.config import ConfigError, check_config, load_config
from conta_core.infra.layout import MODELS, STAGES, for_method
from conta_core.infra.methods import ADJUSTMENTS, CONTEXT_MODES, METHOD_NAMES, METHODS


def test_schema_enums_equal_the_registry():
    schema = yaml.safe_load(open("config/schema.yaml"))["properties"]
    assert tuple(schema["method"]["enum"]) == METHOD_NAMES
    ctx = schema["context"]["properties"]
    assert tuple(ctx["mode"]["enum"]) == CONTEXT_MODES and tuple(ctx["adjustment"]["enum"]) == ADJUSTMENTS


def test_every_method_names_known_artifacts_and_sections():
    defaults = load_config()
    for m in METHODS.values():
        assert set(m.models) <= set(MODELS) and m.models[0] == "cls" and m.models[-1] == "seg"
        assert set(m.stages) <= set(STAGES) and m.walk_maps in {s.name for s in for_method(STAGES, m.name)}
        assert m.section is None or m.section in defaults


@pytest.mark.parametrize(
    ("method", "context", "message"),
    [
        ("seam", {"block": 3}, "context.block"),
        ("amn", {"adjustment": "exact"}, "context.adjustment"),
    ],
)
def test_unsupported_context_settings_fail_naming_the_key(method, context, message):
    cfg = load_config(overrides={"method": method})
    cfg["context"].update(context)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_seam_supports_both_adjustments():
    cfg = load_config(overrides={"method": "seam", "context": {"adjustment": "exact"}})
    check_config(cfg)
