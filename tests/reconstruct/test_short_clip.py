"""Short clips: the held-out split of a clip of any length (a 3 s, 78-frame clip keeps 70 training
frames and holds out its last 8; one frame trains and holds nothing out, which is reported, not a
crash), a fit + evaluation + render of 1- and 2-frame clips, and the torso decision on a tight crop
whose matte stops at the video frame's bottom edge above the crop's."""

from __future__ import annotations

import json
import logging

import imageio.v3 as iio
import numpy as np
import pytest
from flame_fixtures import vhap_export
import torch

from dynavatar.api import Avatar
from dynavatar.perceive.dataset import FrameDataset
from dynavatar.reconstruct import ReconstructConfig
from dynavatar.reconstruct.data import MIN_FRAMES_TO_HOLD_OUT, _frame_bottom, split_train_eval
from dynavatar.reconstruct.trainer import _wants_torso


@pytest.mark.parametrize("n, train, held", [(0, 0, 0), (1, 1, 0), (2, 1, 1), (9, 8, 1), (78, 70, 8), (200, 180, 20)])
def test_split_holds_out_the_last_tenth_and_at_least_one_frame(n, train, held):
    tr, ev = split_train_eval(n, 0.1)
    assert (len(tr), len(ev)) == (train, held)
    assert torch.equal(torch.cat([tr, ev]), torch.arange(n))  # the tail, contiguous, nothing lost
    assert MIN_FRAMES_TO_HOLD_OUT == 2


def test_split_always_keeps_a_training_frame():
    tr, ev = split_train_eval(3, 0.99)
    assert tr.tolist() == [0] and ev.tolist() == [1, 2]




@pytest.mark.parametrize("n", [1, 2])
def test_one_and_two_frame_clips_fit_evaluate_and_render(tmp_path, n, caplog):
    from dynavatar.track.importers import import_vhap

    import_vhap(vhap_export(tmp_path / "export", n, side=24), tmp_path / "data", resolution=24)  # data/tracking too
    cfg = ReconstructConfig.preset("tiny", steps=2, resolution=24, log_every=1, torso=False)
    avatar = Avatar.from_dataset(tmp_path / "data", out_dir=tmp_path / "run", preset="tiny", device="cpu",
                                 config=cfg, progress=False)
    assert avatar.train_idx.tolist() == [0]
    with caplog.at_level(logging.WARNING, logger="dynavatar.reconstruct"):
        # refining no frames at all used to crash; refining one frame of the default head costs a CPU minute
        res = avatar.evaluate(refine_tracking=n == 1)
    assert res["frames"] == n - 1
    if n == 1:  # the documented fallback: nothing held out, figures NaN, and the log says why
        assert np.isnan(res["psnr"]) and "too few to hold any out" in caplog.text
    else:
        assert np.isfinite(res["psnr"]) and "too few" not in caplog.text
    assert avatar.render(frame=n - 1).shape == (24, 24, 3)


def _tight_dataset(root, res: int = 32, frame_rows: int = 24):
    """A dataset whose crops run 8 rows past the bottom of a 100x100 video (as a tight 512 px clip's
    do): the person fills the matte down to the frame's edge, the padding below is 0."""
    for sub in ("frames", "mattes"):
        (root / sub).mkdir(parents=True)
    n, side = 3, 100 * res / frame_rows  # crop side in video pixels so that the frame ends at row 24
    matte = np.zeros((res, res), np.uint8)
    matte[8:frame_rows, 6:26] = 255  # head and shoulders down to the frame's bottom edge
    for i in range(n):
        iio.imwrite(root / "frames" / f"{i:06d}.jpg", np.full((res, res, 3), 90, np.uint8))
        iio.imwrite(root / "mattes" / f"{i:06d}.png", matte)
    (root / "meta.json").write_text(json.dumps({"format": "dynavatar-preprocessed/1", "resolution": res, "fps": 25.0,
                                                "original_size": [100, 100]}))
    np.savez(root / "landmarks.npz", frame_index=np.arange(n), detected=np.ones(n, bool), n_faces=np.ones(n, int),
             lmk_crop=np.zeros((n, 0, 3), np.float32), lmk_orig=np.zeros((n, 0, 2), np.float32),
             crop=np.tile([0.0, 0.0, side], (n, 1)))
    return FrameDataset.load(root)


def test_torso_is_wanted_when_the_matte_reaches_the_frames_bottom_edge(tmp_path):
    """The parser found no clothes (none parsed here) and the crop's own bottom rows are padding; the
    matte touching the video frame's bottom edge decides."""
    from dynavatar.geometry.cameras import Cameras
    from dynavatar.reconstruct.data import load_train_data

    ds = _tight_dataset(tmp_path / "data")
    assert _frame_bottom(ds, 32).tolist() == [24, 24, 24] and _frame_bottom(ds, 64).tolist() == [48, 48, 48]
    cams = Cameras(torch.eye(4).expand(3, 4, 4).clone(), torch.eye(3).expand(3, 3, 3).clone(), 32, 32)
    data = load_train_data(ds, None, 32, 0.0, cameras=cams)
    assert data.mattes[:, -4:].max() == 0  # what the old rule looked at: padding
    assert _wants_torso("auto", data)
    data.mattes[:, 20:] = 0  # a floating head: nothing at the frame's edge
    assert not _wants_torso("auto", data)
    assert _wants_torso(True, data) and not _wants_torso(False, data)
    ds.meta["original_size"] = [0, 0]  # unknown video size (an import): the crop's own bottom edge
    assert _frame_bottom(ds, 32).tolist() == [32, 32, 32]
