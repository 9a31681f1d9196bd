"""The house rules of the package's layout (DESIGN.md §2), checked on the source itself.

- no module over ~600 lines: a subsystem in one file is split along its seams;
- the ground floor (``geometry``) imports no stage: every stage may use it, it uses none of them;
- dependencies point down the pipeline: a stage imports no stage after it, and nothing below the
  shells (``api``, ``cli``, ``bench``, ``demo``) imports them.
"""

from __future__ import annotations

from pathlib import Path

from import_graph import PACKAGE, imports

MAX_LINES = 600

# The stages in pipeline order; a stage may import its own package and any earlier one.
PIPELINE = ("geometry", "flame", "gaussians", "render", "io", "perceive", "track", "reconstruct", "semantics", "edit")
SHELLS = ("api", "cli", "bench", "demo", "config", "view")
# Leaf modules every layer may use: errors, device choice, weight lookups, atomic file writes.
COMMON = ("dynavatar.errors", "dynavatar.device", "dynavatar.weights", "dynavatar.hub", "dynavatar.io.atomic")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dynavatar_imports(path: Path) -> list[str]:
    """Dotted names of every dynavatar module, and member of one, that ``path`` imports."""
    targets = [t for module, names in imports(path) for t in [module] + [f"{module}.{n}" for n in names]]
    return [t for t in targets if t.startswith("dynavatar")]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_is_a_subsystem_in_one_file():
    long = {p.relative_to(PACKAGE).as_posix(): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these along their seams: {long}"


def test_dependencies_point_down_the_pipeline():
    wrong = []
    for path in _modules():
        here = _layer(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if here not in PIPELINE:
            continue
        for target in _dynavatar_imports(path):
            there = _layer(target)
            if target.startswith(COMMON):
                continue
            if there in SHELLS:
                wrong.append(f"{path.relative_to(PACKAGE)} imports the shell {target}")
            elif there in PIPELINE and PIPELINE.index(there) > PIPELINE.index(here):
                wrong.append(f"{path.relative_to(PACKAGE)} ({here}) imports {target}, a later stage")
            elif here == "geometry" and there != "geometry":
                wrong.append(f"{path.relative_to(PACKAGE)}: the ground floor imports {target}")
    assert not wrong, "\n".join(wrong)
