"""The edit wing's shape: ``prompt/`` stands alone, modules stay small, and code outside ``edit/``
finds every name it needs in ``dynavatar.edit`` itself (so the inside can move without breaking it)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import dynavatar
import dynavatar.edit

PACKAGE = Path(dynavatar.__file__).parent
EDIT = Path(dynavatar.edit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in ``path``, functions included."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((module, [a.name for a in node.names]))
    return out


def test_prompt_imports_neither_editors_nor_apply():
    for path in (EDIT / "prompt").rglob("*.py"):
        for module, names in _imports(path):
            targets = [module] + [f"{module}.{n}" for n in names]
            bad = [t for t in targets if t.startswith(("dynavatar.edit.editors", "dynavatar.edit.apply"))]
            assert not bad, f"{path.name} imports {bad}: words -> EditPlan must not need the editors or the loops"


def test_edit_modules_stay_small():
    long = {p.relative_to(EDIT).as_posix(): n for p in EDIT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"split these along their seams: {long}"


def test_code_outside_edit_imports_only_from_dynavatar_edit():
    used: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if EDIT in path.parents:
            continue
        for module, names in _imports(path):
            if module.startswith("dynavatar.edit."):
                raise AssertionError(f"{path.relative_to(PACKAGE)} imports {module}; import from dynavatar.edit")
            if module == "dynavatar.edit":
                used.setdefault(path.name, set()).update(names)
    edit = importlib.import_module("dynavatar.edit")
    missing = {f: sorted(n for n in names if not hasattr(edit, n)) for f, names in used.items()}
    assert not any(missing.values()), f"names not exported by dynavatar.edit: {missing}"
    assert all(n in edit.__all__ for names in used.values() for n in names)
