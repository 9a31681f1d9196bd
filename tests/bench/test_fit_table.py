"""``dynavatar bench fit CLIP [CLIP ...]``: one table over several clips, with the mean and worst rows,
rows saved as JSON and read back, and a clip that fails reported under the table while the others
still run. The fits are real (tracker + optimiser + labels + held-out evaluation) on a tiny
synthetic clip written as a preprocessed dataset folder, on the CPU."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dynavatar.bench.fit_table import bar_lines, format_clips_table, load_rows, save_rows, worst_row
from dynavatar.errors import ConfigError


def write_synthetic_dataset(root, head, n_frames: int = 6, resolution: int = 32):
    """A preprocessed folder (``perceive.dataset`` layout) of ``head``'s (a FLAME-format file)
    scripted performance: frames, mattes and the true mediapipe landmarks (a perfect detector), as
    ``dynavatar preprocess`` would leave it for ``bench fit`` to start from."""
    import imageio.v3 as iio

    from dynavatar.flame import FlameModel
    from dynavatar.perceive.dataset import DATASET_FORMAT
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer

    data = synthetic_clip(FlameModel.load(head), TorchRenderer(), n_frames=n_frames, resolution=resolution)
    for sub in ("frames", "mattes"):  # no parsing: the fit labels by head regions (seconds, not minutes)
        (root / sub).mkdir(parents=True)
    for i in range(n_frames):
        iio.imwrite(root / "frames" / f"{i:06d}.jpg", data.images[i].numpy(), quality=95)
        iio.imwrite(root / "mattes" / f"{i:06d}.png", data.mattes[i].numpy())
    lmk = data.landmarks.numpy()  # [N, L, 2]
    lmk3 = np.concatenate([lmk, np.zeros_like(lmk[..., :1])], -1).astype(np.float32)
    np.savez(root / "landmarks.npz", frame_index=np.arange(n_frames), detected=np.ones(n_frames, bool),
             n_faces=np.ones(n_frames, np.int64), lmk_crop=lmk3, lmk_orig=lmk.astype(np.float32),
             crop=np.tile(np.array([0.0, 0.0, resolution]), (n_frames, 1)))
    meta = {"format": DATASET_FORMAT, "resolution": resolution, "fps": 25.0, "n_frames": n_frames,
            "source": {"path": f"/clips/{root.parent.name}.mp4"}, "original_size": [resolution, resolution]}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _row(clip, psnr_refined, **kw):
    row = {"clip": clip, "frames": 100, "eval_frames": 10, "optimise_s": 60.0, "end_to_end_s": 80.0, "psnr": 20.0,
           "psnr_refined": psnr_refined, "ssim_refined": 0.9, "splats": 1000, "iou_skin": 0.8, "iou_hair": 0.7,
           "iou_lips": 0.6}
    return {**row, **kw}


def test_table_has_a_row_per_clip_then_mean_and_worst():
    rows = [_row("a", 28.0), _row("b", 26.0, splats=3000), {"clip": "c", "error": "no face in any frame; ..."}]
    text = format_clips_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["clip", "frames", "held"]
    mean = next(ln for ln in lines if ln.startswith("mean (2)"))
    assert "27.00" in mean and "2000" in mean  # refined PSNR and splats averaged over the fitted clips
    worst = next(ln for ln in lines if ln.startswith("worst: b"))
    assert "26.00" in worst and "3000" in worst
    assert "c: FAILED: no face in any frame; ..." in text
    assert worst_row(rows)["clip"] == "b"


def test_bars_name_the_clips_that_miss_them():
    rows = [_row("a", 28.0, ssim_refined=0.95, psnr=25.0, nme=1.0, nme_tracked=0.9, iou_hair=0.9),
            _row("b", 26.0, ssim_refined=0.85, psnr=24.0, nme=1.0, nme_tracked=1.5, iou_hair=None),
            {"clip": "c", "error": "no face in any frame; ..."}]
    lines = bar_lines(rows)
    assert lines[0] == "bar refined PSNR >= 27.0: 1 of 2 clips (missed: b 26.00)"
    assert lines[1] == "bar SSIM >= 0.9: 1 of 2 clips (missed: b 0.850)"
    assert lines[2] == "bar tracked PSNR >= 24.0: 2 of 2 clips"  # the bar itself passes
    assert lines[3] == "bar NME trk % <= the landmark fit's: 1 of 2 clips (missed: b 1.50 vs 1.00)"
    assert lines[4] == "bar hair IoU >= 0.85: 1 of 1 clips"  # b has no label figure
    assert lines[5] == "bar mean refined PSNR >= 28.5: 27.00, missed"
    assert "\n".join(lines) in format_clips_table(rows)


def test_missing_figures_print_as_na_and_rows_round_trip(tmp_path):
    rows = [_row("a", None, iou_hair=None)]
    assert "n/a" in format_clips_table(rows).splitlines()[2]
    assert worst_row(rows) is None
    path = save_rows(rows, tmp_path / "rows.json")
    assert load_rows(path) == rows
    (tmp_path / "bad.json").write_text('{"not": "rows"}')
    with pytest.raises(ConfigError, match="bench fit --json"):
        load_rows(tmp_path / "bad.json")


def test_fit_row_keeps_the_tables_figures_and_drops_the_avatar():
    from dynavatar.bench.fit_table import fit_row

    r = {"video": "/x/data", "frames": 78, "eval_frames": 8, "preset": "fast", "device": "cuda", "splats": 9,
         "torso": True, "optimise_s": 100.0, "end_to_end_s": 130.0, "preprocess_s": float("nan"), "psnr": 21.0,
         "psnr_refined": 27.5, "ssim_refined": 0.91, "lpips": None, "avatar": object(), "nme": 0.025,
         "psnr_refined_whole_crop": 24.0,
         "label_iou": {"skin": 0.8, "hair": 0.7, "lips": 0.6, "eyes": 0.5}, "label_iou_refined": {"skin": 0.85}}
    row = fit_row(r)
    json.dumps(row)  # JSON-safe: no avatar, NaN -> None
    assert row["clip"] == "data" and row["preprocess_s"] is None and row["torso"] is True
    assert (row["iou_skin"], row["iou_hair"], row["iou_lips"], row["iou_skin_refined"]) == (0.8, 0.7, 0.6, 0.85)
    assert row["iou_hair_refined"] is None and "avatar" not in row and row["nme"] == pytest.approx(2.5)
    assert row["psnr_refined_whole_crop"] == 24.0  # the old scoring stays on record beside the new


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    from dynavatar.flame.file_format import write_flame_npz
    from flame_fixtures import ellipsoid_head

    return write_flame_npz(ellipsoid_head(n_lat=12, n_lon=16), tmp_path_factory.mktemp("head") / "head.npz")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, head_file):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthclip") / "data", head_file)


def test_bench_fit_several_clips_prints_one_table_and_saves_rows(tmp_path, clip_dir, head_file, monkeypatch):
    """Two clips (one of them not a dataset at all) through the real CLI: the good clip is fitted and
    scored, the bad one fails with its one-line error under the table, the JSON holds both rows and
    joins a later table without refitting. A ``--set`` reaches the fit and tags the rows."""
    import dynavatar.api as api
    import dynavatar.bench.fit as fit
    from dynavatar.cli import main
    from dynavatar.reconstruct import ReconstructConfig
    from dynavatar.reconstruct.refine_tracking import RefineTrackingConfig

    # the tiny preset, smaller still: the table's wiring is under test here, not the optimiser
    tiny = ReconstructConfig.preset("tiny", steps=4, resolution=32, log_every=2, torso=False)
    real = fit.run_fit_bench
    seen = []

    def smaller(*a, **k):  # keep the CLI's --set, on the smaller settings
        seen.append(k["config"].w_landmark_budget)
        return real(*a, **{**k, "config": dataclasses.replace(tiny, w_landmark_budget=k["config"].w_landmark_budget)})

    monkeypatch.setattr(fit, "run_fit_bench", smaller)
    monkeypatch.setattr(api, "RefineTrackingConfig", lambda: RefineTrackingConfig(steps=3))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "meta.json").write_text("{}")
    out, rows_path = tmp_path / "runs", tmp_path / "rows.json"
    res = CliRunner().invoke(main, ["bench", "fit", str(clip_dir), str(tmp_path / "empty"), "--preset", "tiny",
                                    "--device", "cpu", "--head", str(head_file), "-o", str(out),
                                    "--json", str(rows_path), "--set", "w_landmark_budget=1"])
    assert res.exit_code == 1, res.output
    assert seen == [1.0, 1.0]
    rows = json.loads(rows_path.read_text())
    tag = " [w_landmark_budget=1]"
    assert [r["clip"] for r in rows] == ["synthclip0" + tag, "empty" + tag]  # the video's name, the folder's
    good = rows[0]
    assert good["frames"] == 6 and good["eval_frames"] == 1 and good["splats"] > 0
    assert 5 < good["psnr"] < 60 and 5 < good["psnr_refined"] < 60 and 0 < good["ssim_refined"] <= 1
    assert good["nme"] is not None and 0 <= good["nme"] < 5  # a perfect detector: the tracker fits it closely
    assert good["nme_tracked"] is not None and 5 < good["psnr_landmarks"] < 60  # the photometric stage's before/after
    assert good["iou_skin"] is None and (out / "synthclip0" / "held_out.png").is_file()  # unparsed: no IoU
    assert (out / "synthclip0" / "turned_heads.png").is_file() and 5 < good["turn_psnr"] < 60
    shares = good["error_regions"]  # where the held-out error lives (unparsed: outline, background, other)
    assert sum(v["share"] for v in shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert shares["hair"]["share"] == 0 and shares["outline"]["share"] > 0
    assert "unknown dataset format" in rows[1]["error"]
    assert "worst: synthclip0" + tag in res.output and f"empty{tag}: FAILED" in res.output and "PSNR lmk" in res.output
    assert "worst clip's held-out squared error by region: outline" in res.output or "by region: other" in res.output
    bad = CliRunner().invoke(main, ["bench", "fit", str(clip_dir), "--set", "w_landmark_budget=lots"])
    assert bad.exit_code == 2 and "w_landmark_budget" in bad.output and "Traceback" not in bad.output
    # saved rows join a new table without fitting again
    res2 = CliRunner().invoke(main, ["bench", "fit", str(rows_path)])
    assert res2.exit_code == 1 and "worst: synthclip0" in res2.output and f"{good['psnr_refined']:.2f}" in res2.output
