"""The library's imports run downward: infra < data < models < steps < evaluation < report
(README, the layout block); script.py and cli.py sit on top. Checked on the source, function-level
imports included, so a lazy upward import cannot slip in."""

from __future__ import annotations

import ast

from conftest import REPO

LAYERS = ("infra", "data", "models", "steps", "evaluation", "report")


def _conta_imports(path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        out += [(n, node.lineno) for n in names if n.startswith("conta_core.")]
    return out


def test_every_package_imports_only_its_own_layer_or_lower():
    root = REPO / "conta_core"
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue  # script.py, cli.py, __init__.py: the top
        assert parts[0] in LAYERS, f"{path}: package {parts[0]} has no place in LAYERS"
        for name, line in _conta_imports(path):
            target = name.split(".")[1]
            assert target in LAYERS, f"{path}:{line} imports {name}, outside the layers"
            if LAYERS.index(target) > LAYERS.index(parts[0]):
                upward.append(f"{path.relative_to(REPO)}:{line} ({parts[0]}) imports {name}")
    assert not upward, "upward imports:\n" + "\n".join(upward)
