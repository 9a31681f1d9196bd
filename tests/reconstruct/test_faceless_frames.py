"""A clip where the face leaves the frame: those frames are neither trained on nor judged, and the
fit, evaluation and renders still work."""

import numpy as np
import torch

from bench.test_fit_table import write_synthetic_dataset
from dynavatar.reconstruct.data import split_train_eval, without_faceless


def test_split_drops_faceless_frames_and_keeps_a_split_with_no_face_to_train():
    train, held = split_train_eval(10, 0.2)  # 0-7 train, 8-9 held out
    det = np.ones(10, bool)
    det[[2, 3, 4, 9]] = False
    t, h = without_faceless(train, held, det)
    assert t.tolist() == [0, 1, 5, 6, 7] and h.tolist() == [8]
    t, h = without_faceless(train, held, np.ones(10, bool))
    assert torch.equal(t, train) and torch.equal(h, held)
    none = np.zeros(10, bool)
    none[9] = True  # only a held-out frame shows a face: nothing to train on without the rest
    t, h = without_faceless(train, held, none)
    assert torch.equal(t, train) and torch.equal(h, held)


def test_fit_on_a_clip_whose_face_leaves_the_frame(tmp_path):
    """Frames 3-6 of 12 show an empty room (no face: landmarks interpolated, matte empty)."""
    import imageio.v3 as iio

    from dynavatar.api import Avatar
    from dynavatar.flame.file_format import write_flame_npz
    from dynavatar.reconstruct import ReconstructConfig
    from flame_fixtures import ellipsoid_head

    head = write_flame_npz(ellipsoid_head(n_lat=12, n_lon=16), tmp_path / "head.npz")
    root = write_synthetic_dataset(tmp_path / "clip" / "data", head, n_frames=12)
    lm = dict(np.load(root / "landmarks.npz"))
    lm["detected"][3:7] = False
    np.savez(root / "landmarks.npz", **lm)
    for k in range(3, 7):
        iio.imwrite(root / "frames" / f"{k:06d}.jpg", np.full((32, 32, 3), 90, np.uint8), quality=95)
        iio.imwrite(root / "mattes" / f"{k:06d}.png", np.zeros((32, 32), np.uint8))
    cfg = ReconstructConfig.preset("tiny", steps=20, resolution=32, log_every=10, torso=False)
    avatar = Avatar.from_dataset(root, head=head, out_dir=tmp_path / "clip", preset="tiny", device="cpu",
                                 config=cfg, progress=False)
    assert avatar.train_idx.tolist() == [0, 1, 2, 7, 8, 9, 10]
    assert avatar.frame_data().eval_idx.tolist() == [11]
    assert np.isfinite(avatar.evaluate()["psnr"]) and avatar.render(frame=4).shape == (32, 32, 3)
    avatar.save(tmp_path / "saved")  # the split travels with the avatar
    assert Avatar.load(tmp_path / "saved", device="cpu").train_idx.tolist() == [0, 1, 2, 7, 8, 9, 10]
