"""The library's imports run downward: infra < data < models < steps < evaluation < report
(README, the layout block); script.py and cli.py sit on top. Checked on the source: function-level,
`from conta_core import x` and relative imports included (not importlib calls)."""

from __future__ import annotations

import ast

from conftest import REPO

LAYERS = ("infra", "data", "models", "steps", "evaluation", "report")


def _conta_imports(path, package: str) -> list[tuple[str, int]]:
    """(module, line) of every conta_core import in the file: `import conta_core.x`,
    `from conta_core.x import y`, `from conta_core import x` (as conta_core.x) and relative
    imports resolved against `package` (the file's package, e.g. conta_core.steps)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base == "conta_core":
                out += [(f"conta_core.{a.name}", node.lineno) for a in node.names]
            else:
                out.append((base, node.lineno))
    return [(n, line) for n, line in out if n.startswith("conta_core.")]


def test_every_package_imports_only_its_own_layer_or_lower():
    root = REPO / "conta_core"
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue  # script.py, cli.py, __init__.py: the top
        assert parts[0] in LAYERS, f"{path}: package {parts[0]} has no place in LAYERS"
        package = ".".join(("conta_core", *parts[:-1]))
        for name, line in _conta_imports(path, package):
            target = name.split(".")[1]
            assert target in LAYERS, f"{path}:{line} imports {name}, outside the layers"
            if LAYERS.index(target) > LAYERS.index(parts[0]):
                upward.append(f"{path.relative_to(REPO)}:{line} ({parts[0]}) imports {name}")
    assert not upward, "upward imports:\n" + "\n".join(upward)
