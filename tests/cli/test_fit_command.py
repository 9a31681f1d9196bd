"""`dynavatar fit` end to end on a 4-frame imported clip: --set reaches the fit, the run folder records
its settings, a resume with other settings is refused unless --restart, and the saved avatar evaluates
after load."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dynavatar.cli import main
from flame_fixtures import vhap_export


@pytest.mark.slow  # three fits with labelling: ~20 s idle
def test_fit_with_settings_records_them_and_guards_the_resume(tmp_path):
    from dynavatar.api import Avatar
    from dynavatar.track.importers import import_vhap

    import_vhap(vhap_export(tmp_path / "export", focal=120.0), tmp_path / "data", resolution=32)
    run = tmp_path / "run"
    base = ["fit", str(tmp_path / "data"), "-o", str(run), "--preset", "tiny", "--device", "cpu",
            "--set", "reconstruct.resolution=32", "--set", "reconstruct.torso=false", "--set", "log_every=1"]
    r = CliRunner().invoke(main, base + ["--steps", "2", "--no-eval"])
    assert r.exit_code == 0 and "avatar in" in r.output, r.output
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["reconstruct"]["steps"] == 2 and recorded["reconstruct"]["resolution"] == 32
    assert recorded["reconstruct"]["torso"] is False
    assert json.loads((run / ".dynavatar").read_text())["kind"] == "run"
    figures = Avatar.load(run / "avatar", device="cpu").evaluate()  # frames re-attached from the dataset
    assert figures["frames"] == 1 and figures["psnr"] > 0

    r = CliRunner().invoke(main, base + ["--steps", "2", "--set", "reconstruct.lr.sh=0.5"])
    assert r.exit_code == 2 and "lr.sh" in r.output and "--restart" in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    r = CliRunner().invoke(main, base + ["--steps", "2", "--set", "reconstruct.lr.sh=0.5", "--restart", "--no-eval"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["reconstruct"]["lr"]["sh"] == 0.5
