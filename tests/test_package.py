"""Package hygiene: a light import, the CLI, the info report."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from dynavatar.cli import main

HEAVY = ("gsplat", "diffusers", "transformers", "mediapipe", "facer", "cv2")


def test_import_is_light_and_fast():
    code = ("import sys, time, json; t = time.perf_counter(); import dynavatar; "
            "dt = time.perf_counter() - t; print(json.dumps({'dt': dt, 'mods': sorted(sys.modules)}))")
    best = None
    for _ in range(2):  # the first import may pay for a cold disk cache
        out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        best = out if best is None or out["dt"] < best["dt"] else best
    loaded = [m for m in best["mods"] if m.split(".")[0] in HEAVY]
    assert not loaded, f"import dynavatar pulled in {loaded}"
    assert best["dt"] < 2.0, f"import dynavatar took {best['dt']:.2f}s"


def test_lazy_public_names():
    import dynavatar

    assert dynavatar.FlameModel.__name__ == "FlameModel"
    assert issubclass(dynavatar.FlameFileError, ValueError)


def test_cli_info_runs():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    for needle in ("torch", "head model", "cuda", "gsplat", "optional weights"):
        assert needle in result.output


def test_cli_flame_convert(tmp_path):
    from flame_fixtures import synthetic_flame_arrays, write_chumpy_pickle

    src = write_chumpy_pickle(tmp_path / "generic_model.pkl", synthetic_flame_arrays())
    result = CliRunner().invoke(main, ["flame", "convert", str(src), str(tmp_path / "out.npz")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.npz").is_file()
    bad = CliRunner().invoke(main, ["flame", "convert", str(tmp_path / "missing.pkl"), str(tmp_path / "x.npz")])
    assert bad.exit_code == 2 and "not found" in bad.output
    assert not (tmp_path / "x.npz").exists()


def test_main_module_runs():
    out = subprocess.run([sys.executable, "-m", "dynavatar", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "dynavatar" in out.stdout


def test_atomic_writes_leave_nothing_on_failure_and_use_normal_permissions(tmp_path):
    import os
    import stat

    import pytest

    from dynavatar.io.atomic import atomic_path

    with atomic_path(tmp_path / "ok.bin") as tmp:
        open(tmp, "wb").write(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "ok.bin").st_mode)
    assert mode & 0o044, oct(mode)  # readable by others (umask permitting), not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "bad.bin") as tmp:
            open(tmp, "wb").write(b"partial")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.bin"]


def test_the_facade_loads_light_too():
    code = "import sys, dynavatar.api, dynavatar.config; print(' '.join(sorted(sys.modules)))"
    mods = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    loaded = [m for m in mods if m.split(".")[0] in HEAVY]
    assert not loaded, f"import dynavatar.api pulled in {loaded}"


def test_demo_and_benchmarks_use_only_public_names_of_the_facade():
    """bench/ and demo.py are the facade's first users: what they need, a user needs too."""
    import ast
    from pathlib import Path

    import dynavatar

    root = Path(dynavatar.__file__).parent
    for path in [root / "demo.py", *sorted((root / "bench").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("api"):
                assert all(not a.name.startswith("_") for a in node.names), (path.name, ast.dump(node))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in (
                    "avatar", "a", "before", "after", "edited"):
                assert not node.attr.startswith("_"), (path.name, node.lineno, node.attr)
