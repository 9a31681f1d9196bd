"""The example notebooks (``examples/``): made from their scripts, committed clean, and they run.

A notebook nobody runs rots, and one edited apart from its script drifts. So: every committed
``.ipynb`` must be exactly what ``examples/make_notebooks.py`` makes of its ``.py`` (the source of
truth) and carry no outputs (fast, default suite); and every notebook must execute top to bottom in a
fresh Jupyter kernel of this interpreter on a CPU (``slow``: CI runs ``pytest -m slow``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED = ["01_quickstart", "02_text_edits", "03_animate_and_export", "04_building_blocks"]


def _load_converter():
    """``examples/make_notebooks.py`` as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = _load_converter()
SCRIPTS = converter.example_scripts(EXAMPLES)


def test_the_examples_are_the_four_the_project_names():
    assert [s.stem for s in SCRIPTS] == EXPECTED
    assert (EXAMPLES / "README.md").is_file()
    assert converter.stale_notebooks(EXAMPLES) == []  # the --check mode agrees with the test below


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_committed_notebook_is_made_from_its_script(script):
    notebook = script.with_suffix(".ipynb")
    assert notebook.is_file(), f"{notebook.name} is missing: run python examples/make_notebooks.py"
    assert notebook.read_text(encoding="utf-8") == converter.make_notebook(script), (
        f"{notebook.name} differs from {script.name}: edit the script, then run python examples/make_notebooks.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_opens_with_prose(script):
    nb = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")  # a title, then why
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2  # prose explains the code


def test_converter_splits_percent_cells_and_keeps_code_verbatim():
    source = ("import os\n\n# %% [markdown]\n# # Title\n#\n# Why it matters.\n\n# %%\nx = 1  # keep\n\n\n"
              "def f():\n    return x\n# %% a titled cell\nprint(f())\n")
    assert converter.split_cells(source) == [
        ("code", "import os"), ("markdown", "# Title\n\nWhy it matters."),
        ("code", "x = 1  # keep\n\n\ndef f():\n    return x"), ("code", "print(f())")]
    with pytest.raises(ValueError, match="not a comment"):
        converter.split_cells("# %% [markdown]\n# prose\nforgot_the_hash = 1\n")


def test_converter_output_is_a_clean_notebook_with_stable_ids(tmp_path):
    script = tmp_path / "07_demo.py"
    script.write_text("# %% [markdown]\n# # Demo\n\n# %%\nprint('hi')\n", encoding="utf-8")
    text = converter.make_notebook(script)
    assert text == converter.make_notebook(script)  # deterministic: no random cell ids
    nb = nbformat.reads(text, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code"] and [c.id for c in nb.cells] == ["07-00", "07-01"]
    assert nb.cells[1].source == "print('hi')" and nb.cells[1].outputs == [] and nb.cells[1].execution_count is None
    assert converter.stale_notebooks(tmp_path) == [tmp_path / "07_demo.ipynb"]  # not written yet
    (tmp_path / "07_demo.ipynb").write_text(text, encoding="utf-8")
    assert converter.stale_notebooks(tmp_path) == []


@pytest.mark.slow  # 20-60 s each on 2 CPU cores; CI runs them with `pytest -m slow`
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(script, tmp_path, monkeypatch):
    """Execute the committed notebook in a fresh python3 kernel (this interpreter), in an empty folder,
    with its outputs directed into tmp_path; a failing cell fails the test with its traceback."""
    from nbclient import NotebookClient

    out = tmp_path / "out"
    monkeypatch.setenv("DYNAVATAR_EXAMPLES_OUT", str(out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # CI has no internet: nothing may try to download
    # One torch thread unless told otherwise: on a shared 2-core machine two spinning OpenMP threads
    # per process made the fits 3-4x slower (measured), and the tiny examples gain little from more.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))  # which environment ran it
    client = NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()
    print(f"{script.stem}: executed in {time.perf_counter() - t0:.0f} s")
    ran_in = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert ran_in == sys.prefix, f"the notebook ran in {ran_in}, not in this environment ({sys.prefix})"
    written = sorted(p.name for p in (out / script.stem).iterdir())
    assert any(name.endswith(".png") for name in written), written
    assert not (tmp_path / "example-output").exists()  # the default folder: the variable was ignored
