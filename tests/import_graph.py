"""Every import a module of the package makes, read from its source (function bodies included):
what the layout tests check the house rules against."""

from __future__ import annotations

import ast
from pathlib import Path

import dynavatar

PACKAGE = Path(dynavatar.__file__).parent


def module_name(path: Path) -> str:
    """``src/dynavatar/edit/plan.py`` -> ``dynavatar.edit.plan`` (a package's ``__init__`` -> the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in ``path``; relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((module, [a.name for a in node.names]))
    return out
