"""The method registry (conta_core.infra.methods) is the one list: the schema and the checks follow it."""

from __future__ import annotations

import importlib.util
import inspect
import json

import pytest
import yaml
from conftest import REPO

from conta_core.infra.config import ConfigError, check_config, load_config
from conta_core.infra.layout import MODELS, STAGES, for_method
from conta_core.infra.methods import ADJUSTMENTS, CONTEXT_MODES, INJECTS, METHOD_NAMES, METHODS, STEP_RULES
from conta_core.infra.rule_configs import rule_configs
from conta_core.script import step_function


def test_schema_enums_equal_the_registry():
    schema = yaml.safe_load(open("config/schema.yaml"))["properties"]
    assert tuple(schema["method"]["enum"]) == METHOD_NAMES
    ctx = schema["context"]["properties"]
    assert tuple(ctx["mode"]["enum"]) == CONTEXT_MODES and tuple(ctx["adjustment"]["enum"]) == ADJUSTMENTS
    assert tuple(ctx["inject"]["enum"]) == INJECTS


def test_every_method_names_known_artifacts_and_sections():
    defaults = load_config()
    for m in METHODS.values():
        assert set(m.models) <= set(MODELS) and m.models[0] == "cls" and m.models[-1] == "seg"
        assert set(m.stages) <= set(STAGES) and m.walk_maps in {s.name for s in for_method(STAGES, m.name)}
        assert m.section is None or m.section in defaults
        assert set(m.steps) == set(STEP_RULES) and m.walk_model in m.models and m.cls_section in defaults


# The scripts' required options besides --cfg (paths need not exist: the step function is a stub).
STEP_ARGV = {
    "train_cls": ["--manifest", "m.json", "--out", "model.pth"],
    "make_cam": ["--manifest", "m.json", "--model", "model.pth", "--out-dir", "cam"],
    "make_ir_label": ["--manifest", "m.json", "--shard", "0", "--num-shards", "1", "--cams-dir", "c", "--out-dir", "o"],
    "random_walk": ["--manifest", "m.json", "--shard", "0", "--num-shards", "1", "--cams-dir", "c"]
    + ["--model", "aff.pth", "--out-dir", "o"],
}


class _Manifest:
    @staticmethod
    def load(path):
        return _Manifest()

    def ids(self, split):
        return ["a"]


@pytest.mark.parametrize("step", STEP_RULES)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_the_step_scripts_call_every_methods_step_function_by_its_signature(monkeypatch, name, step):
    """One script per step rule: its call, with the method's rule --cfg object
    (conta_core.infra.rule_configs), binds to the method's step function (the registry's
    "module:function", so adding a method with another call shape fails here)."""
    spec = importlib.util.spec_from_file_location(f"script_{step}", REPO / "workflow_scripts" / f"{step}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    calls = []
    monkeypatch.setattr(script, "step_function", lambda m, s: lambda *a, **k: calls.append((m, s, a, k)))
    for attr, stub in (
        ("Manifest", _Manifest),
        ("select_shard", lambda args: (_Manifest(), ["a"])),
        ("index_artifacts", lambda dirs, suffix: {}),
    ):
        if hasattr(script, attr):
            monkeypatch.setattr(script, attr, stub)
    cfg = json.dumps(rule_configs(load_config(overrides={"method": name}))[step])
    script.main(["--cfg", cfg, "--device", "cpu", "--method", name, *STEP_ARGV[step]])
    [(m, s, args, kwargs)] = calls
    assert (m, s) == (name, step)
    inspect.signature(step_function(name, step)).bind(*args, **kwargs)


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
