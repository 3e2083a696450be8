"""Layering: tasks/ and cli.py are thin entry points; no library module imports kibble.tasks (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import kibble

ROOT = Path(kibble.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_library_module_imports_the_cli_layer():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "tasks" or rel.name == "cli.py":
            continue
        bad = sorted(n for n in _imports(path) if n == "kibble.tasks" or n.startswith("kibble.tasks."))
        if bad:
            offenders.append(f"{rel}: {', '.join(bad)}")
    assert not offenders, "library modules import kibble.tasks:\n" + "\n".join(offenders)
