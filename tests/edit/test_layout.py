"""The edit wing's shape: ``prompt/`` stands alone, and code outside ``edit/``
finds every name it needs in ``dynavatar.edit`` itself (so the inside can move without breaking it)."""

from __future__ import annotations

import importlib
from pathlib import Path

import dynavatar.edit
from import_graph import PACKAGE, imports

EDIT = Path(dynavatar.edit.__file__).parent


def test_prompt_imports_neither_editors_nor_apply():
    for path in (EDIT / "prompt").rglob("*.py"):
        for module, names in imports(path):
            targets = [module] + [f"{module}.{n}" for n in names]
            bad = [t for t in targets if t.startswith(("dynavatar.edit.editors", "dynavatar.edit.apply"))]
            assert not bad, f"{path.name} imports {bad}: words -> EditPlan must not need the editors or the loops"


def test_code_outside_edit_imports_only_from_dynavatar_edit():
    used: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if EDIT in path.parents:
            continue
        for module, names in imports(path):
            if module.startswith("dynavatar.edit."):
                raise AssertionError(f"{path.relative_to(PACKAGE)} imports {module}; import from dynavatar.edit")
            if module == "dynavatar.edit":
                used.setdefault(path.name, set()).update(names)
    edit = importlib.import_module("dynavatar.edit")
    missing = {f: sorted(n for n in names if not hasattr(edit, n)) for f, names in used.items()}
    assert not any(missing.values()), f"names not exported by dynavatar.edit: {missing}"
    assert all(n in edit.__all__ for names in used.values() for n in names)
