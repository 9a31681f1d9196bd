"""Make the example notebooks from their scripts: ``examples/NN_name.py`` -> ``examples/NN_name.ipynb``.

The scripts are the source of truth, written in jupytext's "percent" format: a line ``# %%`` starts a
code cell, ``# %% [markdown]`` a prose cell whose lines are comments (``# `` is stripped). One file
serves people who use Jupyter and people who do not, and the notebook cannot drift from the script:
``tests/test_examples.py`` checks that every committed notebook is exactly what this module makes of
its script, and that it carries no outputs. Only the standard library and nbformat are needed (no
jupytext).

    python examples/make_notebooks.py          # rewrite every notebook from its script
    python examples/make_notebooks.py --check  # exit 1, naming the stale notebooks, if any differs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

EXAMPLES = Path(__file__).resolve().parent
#: A cell marker: ``# %%`` alone, or followed by a title and/or a ``[markdown]`` tag.
MARKER = re.compile(r"^# %%(?P<rest>.*)$")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def example_scripts(folder: Path = EXAMPLES) -> list[Path]:
    """The example scripts (``NN_name.py``) of ``folder``, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.py"))


def split_cells(source: str) -> list[tuple[str, str]]:
    """Script text -> [(kind, text)] with kind "code" or "markdown", in order.

    Text before the first marker is a code cell (if any is there). Blank lines around a cell are
    dropped; a markdown cell's lines lose their leading ``# `` (or a bare ``#``)."""
    cells: list[tuple[str, list[str]]] = [("code", [])]
    for line in source.splitlines():
        m = MARKER.match(line)
        if m:
            cells.append(("markdown" if "[markdown]" in m.group("rest") else "code", []))
        else:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [_uncomment(line) for line in lines]
        text = "\n".join(lines).strip("\n")
        if text.strip():
            out.append((kind, text))
    return out


def _uncomment(line: str) -> str:
    """A prose line of a markdown cell without its comment sign (blank lines stay blank)."""
    if line.startswith("# "):
        return line[2:]
    if line.rstrip() in ("#", ""):
        return ""
    raise ValueError(f"a line of a markdown cell is not a comment: {line!r}; start it with '# '")


def make_notebook(script: Path) -> str:
    """The notebook text (nbformat 4, no outputs, deterministic cell ids) for ``script``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    try:
        cells = split_cells(script.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{script.name}: {exc}") from None
    for i, (kind, text) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"{script.stem[:2]}-{i:02d}"  # stable ids: a fresh random id per run would always differ
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def notebook_path(script: Path) -> Path:
    return script.with_suffix(".ipynb")


def stale_notebooks(folder: Path = EXAMPLES) -> list[Path]:
    """Notebooks missing or different from what their scripts make."""
    return [notebook_path(s) for s in example_scripts(folder)
            if not notebook_path(s).is_file()
            or notebook_path(s).read_text(encoding="utf-8") != make_notebook(s)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report notebooks that differ from their scripts")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_notebooks()
        for nb in stale:
            print(f"{nb} differs from its script: run python examples/make_notebooks.py")
        return 1 if stale else 0
    for script in example_scripts():
        notebook_path(script).write_text(make_notebook(script), encoding="utf-8")
        print(f"wrote {notebook_path(script)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
