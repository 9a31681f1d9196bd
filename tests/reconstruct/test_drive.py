"""Driving an avatar with another clip of the same person, tracked photometrically."""

import pytest

from bench.test_fit_table import write_synthetic_dataset


@pytest.fixture(scope="module")
def small_head(tmp_path_factory):
    from dynavatar.flame.file_format import write_flame_npz
    from flame_fixtures import ellipsoid_head

    return write_flame_npz(ellipsoid_head(n_lat=12, n_lon=16), tmp_path_factory.mktemp("head") / "head.npz")


def test_a_clip_of_the_same_person_drives_the_avatar_closer_than_its_landmarks(tmp_path, small_head):
    """Fit on one clip of a head, drive with another clip of it (other frames of the performance): the
    photometric stage brings the renders closer to the driving frames than the landmark fit does, the
    identity stays the avatar's, and the side-by-side video is written."""
    import torch

    from dynavatar.api import Avatar
    from dynavatar.reconstruct import ReconstructConfig
    from dynavatar.reconstruct.drive import driven_psnr

    torch.manual_seed(0)
    fit_clip = write_synthetic_dataset(tmp_path / "a" / "data", small_head, n_frames=8)
    drive_clip = write_synthetic_dataset(tmp_path / "b" / "data", small_head, n_frames=5)
    cfg = ReconstructConfig.preset("tiny", steps=150, resolution=32, log_every=50, torso=False)
    avatar = Avatar.from_dataset(fit_clip, head=small_head, out_dir=tmp_path / "a", preset="tiny", device="cpu",
                                 config=cfg, progress=False)
    clip = avatar.drive(drive_clip, path=tmp_path / "driven.mp4", steps=60, progress=False)
    assert len(clip) == 5 and (tmp_path / "driven.mp4").stat().st_size > 0
    assert torch.equal(clip.params.shape, avatar.params.shape[:1].expand(5, -1))
    photometric = driven_psnr(avatar.gaussians, avatar.model, clip, avatar.renderer)
    landmarks = driven_psnr(avatar.gaussians, avatar.model, clip, avatar.renderer, landmarks_only=True)
    assert photometric > landmarks + 0.5, (landmarks, photometric)

    # the command line says the same in one line
    from click.testing import CliRunner

    from dynavatar.cli import main

    avatar.save(tmp_path / "avatar")
    res = CliRunner().invoke(main, ["render", str(tmp_path / "avatar"), "-o", str(tmp_path / "cli.mp4"),
                                    "--drive", str(drive_clip), "--steps", "60", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "5 frames driven" in res.output and (tmp_path / "cli.mp4").is_file()
