"""Output-folder policy (io/output_dir.py): nothing dynavatar did not write is deleted or overwritten.

Every refusal must leave the folder exactly as it was (same names, same bytes, same mtimes), and
must come before any work (preprocess refuses before a model is loaded).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dynavatar.errors import OutputPathError
from dynavatar.io.atomic import atomic_path
from dynavatar.io.output_dir import (MARKER, check_output_dir, check_output_file, mark_output_dir, read_marker,
                                     staged_dir)


def _snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file under ``folder``, and the folder's own mtime."""
    files = {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
             for p in sorted(folder.rglob("*")) if p.is_file()}
    return files, folder.stat().st_mtime_ns


def _user_folder(tmp_path, name="thesis"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work")
    old = time.time() - 3600  # an mtime that a rewrite could not reproduce
    os.utime(folder / "thesis.txt", (old, old))
    return folder


def _fill(folder, text):
    (folder / "data.txt").write_text(text)


def test_user_folder_is_refused_and_untouched(tmp_path):
    folder = _user_folder(tmp_path)
    before = _snapshot(folder)
    with pytest.raises(OutputPathError, match="not empty and was not written by dynavatar.*nothing was changed"):
        check_output_dir(folder, "dataset")
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no probe file or staging left


def test_empty_and_marked_folders_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", "dataset") == (tmp_path / "empty").resolve()
    marked = mark_output_dir(tmp_path / "a" / "b", "dataset")
    _fill(marked, "old")
    assert read_marker(marked)["kind"] == "dataset" and "version" in read_marker(marked)
    assert check_output_dir(marked, "dataset") == marked.resolve()
    assert check_output_dir(tmp_path / "new" / "deeper", "dataset") == (tmp_path / "new" / "deeper").resolve()
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(OutputPathError, match="holds dynavatar output of kind 'dataset', not 'avatar'"):
        check_output_dir(marked, "avatar")
    assert check_output_dir(marked, "avatar", overwrite=True) == marked.resolve()


def test_a_file_of_our_marker_name_that_is_not_ours_does_not_count(tmp_path):
    folder = _user_folder(tmp_path)
    (folder / MARKER).write_text("my own notes")
    with pytest.raises(OutputPathError, match="not empty"):
        check_output_dir(folder, "dataset")


def test_folder_holding_the_input_is_refused_even_with_overwrite(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00video bytes" * 100)
    before = _snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match="holds the input"):
            check_output_dir(tmp_path, "dataset", overwrite=overwrite, inputs=[video])
    mark_output_dir(tmp_path / "frames", "dataset")  # even a marked folder: the input is inside
    (tmp_path / "frames" / "000.png").write_bytes(b"png")
    with pytest.raises(OutputPathError, match="holds the input"):
        check_output_dir(tmp_path / "frames", "dataset", inputs=[tmp_path / "frames" / "000.png"])
    with pytest.raises(OutputPathError, match="is inside the input"):  # a folder of frames as input
        check_output_dir(tmp_path / "frames" / "out", "dataset", inputs=[tmp_path / "frames"])
    with pytest.raises(OutputPathError, match="is the input"):
        check_output_file(video, inputs=[video])
    assert video.read_bytes() == b"\x00video bytes" * 100
    assert _snapshot(tmp_path)[0]["clip.mp4"] == before[0]["clip.mp4"]


def test_empty_name_and_dot_mean_the_working_folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert check_output_dir("", "dataset") == work.resolve()
    assert check_output_dir(".", "dataset") == work.resolve()
    _fill(work, "user")
    with pytest.raises(OutputPathError, match="not empty"):
        check_output_dir(".", "dataset")
    with pytest.raises(OutputPathError, match="root of the file system"):
        check_output_dir("/", "dataset", overwrite=True)


def test_marked_working_folder_is_replaced_in_place(tmp_path, monkeypatch):
    """``-o .`` inside a marked folder: the folder itself (the user's shell sits in it) stays, its
    contents are swapped."""
    work = mark_output_dir(tmp_path / "work", "dataset")
    _fill(work, "old")
    monkeypatch.chdir(work)
    inode = os.stat(".").st_ino
    with staged_dir(check_output_dir(".", "dataset"), "dataset") as tmp:
        _fill(tmp, "new")
    assert os.stat(".").st_ino == inode and os.getcwd() == str(work.resolve())
    assert (work / "data.txt").read_text() == "new" and read_marker(work)["kind"] == "dataset"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_overwrite_of_a_user_folder_keeps_the_old_content_aside(tmp_path, caplog):
    folder = _user_folder(tmp_path)
    before = _snapshot(folder)[0]
    target = check_output_dir(folder, "dataset", overwrite=True)
    with caplog.at_level(logging.WARNING, logger="dynavatar.io"), staged_dir(target, "dataset") as tmp:
        _fill(tmp, "new")
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "data.txt"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".thesis.old-")]
    assert len(kept) == 1 and _snapshot(kept[0])[0] == before
    assert str(kept[0]) in caplog.text


def test_marked_folder_is_replaced_and_nothing_is_left_beside_it(tmp_path):
    folder = mark_output_dir(tmp_path / "out", "dataset")
    _fill(folder, "old")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.bin").write_bytes(b"x")
    with staged_dir(check_output_dir(folder, "dataset"), "dataset") as tmp:
        assert tmp.parent == folder.parent and tmp.name.startswith(".out.staging-")
        _fill(tmp, "new")
    assert (folder / "data.txt").read_text() == "new" and not (folder / "sub").exists()
    assert read_marker(folder) == {"kind": "dataset", "version": read_marker(folder)["version"]}  # no staging info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_job_leaves_the_target_untouched(tmp_path):
    folder = mark_output_dir(tmp_path / "out", "dataset")
    _fill(folder, "old")
    before = _snapshot(folder)
    with pytest.raises(RuntimeError, match="crashed"):
        with staged_dir(folder, "dataset") as tmp:
            _fill(tmp, "half")
            raise RuntimeError("crashed")
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OutputPathError, match=f"cannot write {folder.resolve()}: no space left on the device"):
        with staged_dir(folder, "dataset") as tmp:
            _fill(tmp, "half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _snapshot(folder) == before
    with pytest.raises(RuntimeError):  # a new folder is not created by a failed job
        with staged_dir(tmp_path / "fresh", "dataset"):
            raise RuntimeError("crashed")
    assert not (tmp_path / "fresh").exists()


def test_stale_siblings_are_removed_only_when_ours_and_dead(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    def sibling(name, marker):
        p = tmp_path / name
        p.mkdir()
        (p / "junk").write_text("x")
        if marker is not None:
            (p / MARKER).write_text(json.dumps(marker))
        return p

    host = socket.gethostname()
    killed = sibling(".out.staging-aaaa", {"kind": "dataset", "staging": {"pid": dead.pid, "host": host}})
    running = sibling(".out.staging-bbbb", {"kind": "dataset", "staging": {"pid": os.getpid(), "host": host}})
    other_host = sibling(".out.staging-cccc", {"kind": "dataset", "staging": {"pid": dead.pid, "host": host + "x"}})
    old_ours = sibling(".out.old-dddd", {"kind": "dataset"})
    old_users = sibling(".out.old-eeee", None)
    legacy_partial = sibling("out.partial", None)
    with staged_dir(tmp_path / "out", "dataset") as tmp:
        _fill(tmp, "new")
    assert not killed.exists() and not old_ours.exists()
    assert running.exists() and other_host.exists() and old_users.exists() and legacy_partial.exists()


def test_file_where_a_folder_is_needed_and_the_reverse(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(f, "dataset", overwrite=True)
    with pytest.raises(OutputPathError, match="is a file, so .* cannot be created inside it"):
        check_output_dir(f / "sub", "dataset")
    with pytest.raises(OutputPathError, match="is a file, so"):
        check_output_file(f / "out.mp4")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        with staged_dir(f, "dataset"):
            pass
    (tmp_path / "video.mp4").mkdir()
    with pytest.raises(OutputPathError, match="is a folder; give a file name"):
        check_output_file(tmp_path / "video.mp4")
    assert f.read_text() == "mine"
    assert check_output_file(tmp_path / "new" / "a.ply") == (tmp_path / "new" / "a.ply").resolve()
    assert not (tmp_path / "new").exists()


def test_names_over_the_limit_are_refused(tmp_path):
    long = "x" * 300
    with pytest.raises(OutputPathError, match="over this file system's limit of"):
        check_output_dir(tmp_path / long / "data", "dataset")
    with pytest.raises(OutputPathError, match="over this file system's limit"):
        check_output_file(tmp_path / (long + ".mp4"))
    assert list(tmp_path.iterdir()) == []


def test_a_name_at_the_limit_still_gets_staging_and_temp_names(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "y" * limit
    with staged_dir(check_output_dir(tmp_path / name, "dataset"), "dataset") as tmp:
        _fill(tmp, "new")
    with atomic_path(tmp_path / name / ("z" * (limit - 4) + ".npz"), suffix=".npz") as t:
        np.savez(t, a=np.zeros(2))
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == [MARKER, "data.txt", "z" * (limit - 4) + ".npz"]


def test_read_only_parent_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop root from writing")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match=f"cannot write to the folder {parent}"):
            check_output_dir(parent / "out", "dataset")
        with pytest.raises(OutputPathError, match="cannot write to the folder"):
            check_output_file(parent / "out.mp4")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_unwritable_file_system_is_refused_even_for_root(tmp_path):
    """sysfs takes no new files from anyone: the real probe catches what ``os.access`` cannot."""
    if not os.path.isdir("/sys/kernel") or sys.platform != "linux":
        pytest.skip("needs Linux's /sys")
    with pytest.raises(OutputPathError, match="cannot write to the folder /sys"):
        check_output_dir("/sys/dynavatar-out", "dataset")
    with pytest.raises(OutputPathError, match="cannot write to the folder /sys"):
        check_output_file("/sys/dynavatar-out.mp4")
    assert not os.path.exists("/sys/dynavatar-out")


def test_full_disk_during_the_final_replace_is_one_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"previous good checkpoint")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputPathError) as info:
        with atomic_path(target, suffix=".npz") as tmp:
            np.savez(tmp, a=np.arange(3))
    msg = str(info.value)
    assert msg == f"cannot write {target}: no space left on the device (free some space or choose another -o)"
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous good checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # the temp file was removed


def test_read_only_file_system_while_writing_is_converted_but_other_errors_pass(tmp_path):
    with pytest.raises(OutputPathError, match="the file system is read-only"):
        with atomic_path(tmp_path / "a.bin"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(FileNotFoundError):  # a writer's own error about another file is not about -o
        with atomic_path(tmp_path / "b.bin"):
            open(tmp_path / "missing-input.bin", "rb")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- preprocess
@pytest.fixture()
def small_video(tmp_path):
    from dynavatar.io.video import write_video

    rng = np.random.default_rng(0)
    return write_video(tmp_path / "in" / "clip.mp4", [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(4)])


def test_preprocess_refuses_a_user_folder_before_any_work(tmp_path, small_video):
    from dynavatar.perceive import preprocess

    class Untouchable:  # the refusal comes before any model is built or called
        name = "untouchable"

        def detect(self, image):
            raise AssertionError("preprocess did work before checking its output folder")

    folder = _user_folder(tmp_path)
    before = _snapshot(folder)
    t0 = time.perf_counter()
    with pytest.raises(OutputPathError, match="not empty and was not written by dynavatar"):
        preprocess(small_video, folder, detector=Untouchable(), matter=Untouchable(), progress=False)
    video_dir = small_video.parent
    video_bytes = small_video.read_bytes()
    with pytest.raises(OutputPathError, match="holds the input"):
        preprocess(small_video, video_dir, overwrite=True, detector=Untouchable(), matter=Untouchable(), progress=False)
    with pytest.raises(OutputPathError, match="over this file system's limit"):
        preprocess(small_video, tmp_path / ("x" * 300), detector=Untouchable(), matter=Untouchable(), progress=False)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        preprocess(small_video, folder / "thesis.txt", detector=Untouchable(), matter=Untouchable(), progress=False)
    assert time.perf_counter() - t0 < 5
    assert _snapshot(folder) == before
    assert small_video.read_bytes() == video_bytes and sorted(p.name for p in video_dir.iterdir()) == ["clip.mp4"]


def test_preprocess_reuses_a_dataset_written_before_markers(tmp_path, small_video):
    """A legacy (unmarked) dataset folder is the project's own: its cache is used, and it is marked."""
    import dataclasses

    from dynavatar.perceive import PreprocessConfig, preprocess
    from dynavatar.perceive.dataset import DATASET_FORMAT
    from dynavatar.perceive.preprocess import MATTE_VERSION, _fingerprint

    cfg = PreprocessConfig(parse=False, resolution=32)
    out = tmp_path / "data"
    out.mkdir()
    settings = {**dataclasses.asdict(cfg), "matte_version": MATTE_VERSION}
    meta = {"format": DATASET_FORMAT, "source": _fingerprint(small_video), "settings": settings,
            "resolution": 32, "fps": 25.0}
    (out / "meta.json").write_text(json.dumps(meta))
    n = 4
    np.savez(out / "landmarks.npz", frame_index=np.arange(n), detected=np.ones(n, bool), n_faces=np.ones(n, int),
             lmk_crop=np.zeros((n, 478, 3), np.float32), lmk_orig=np.zeros((n, 478, 2), np.float32),
             crop=np.zeros((n, 3)))

    class Untouchable:
        name = "untouchable"

        def detect(self, image):
            raise AssertionError("recomputed instead of using the cache")

    ds = preprocess(small_video, out, config=cfg, detector=Untouchable(), progress=False)
    assert len(ds) == n and read_marker(out)["kind"] == "dataset"


def _tiny_dataset(root, n=2, res=16):
    """A preprocessed folder as older versions wrote it (no marker), with a parsing/ of label maps."""
    import imageio.v3 as iio

    from dynavatar.perceive.dataset import DATASET_FORMAT

    for sub in ("frames", "mattes", "parsing"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        iio.imwrite(root / "frames" / f"{i:06d}.jpg", np.full((res, res, 3), 128, np.uint8))
        iio.imwrite(root / "mattes" / f"{i:06d}.png", np.full((res, res), 255, np.uint8))
        iio.imwrite(root / "parsing" / f"{i:06d}.png", np.full((res, res), 1, np.uint8))
    (root / "meta.json").write_text(json.dumps({"format": DATASET_FORMAT, "resolution": res, "fps": 25.0,
                                                "parser": "old"}))
    np.savez(root / "landmarks.npz", frame_index=np.arange(n), detected=np.ones(n, bool), n_faces=np.ones(n, int),
             lmk_crop=np.zeros((n, 68, 3), np.float32), lmk_orig=np.zeros((n, 68, 2), np.float32),
             crop=np.zeros((n, 3)))
    return root


class _ConstantParser:
    """A tiny offline parser (every pixel one label): parse_dataset's own code path, no model."""

    name = "constant/1"

    def parse_labels(self, image, landmarks, matte):
        return np.full(image.shape[:2], 3, np.uint8)


def test_reparsing_replaces_an_old_parsing_folder_of_ours(tmp_path):
    from dynavatar.perceive import parse_dataset

    root = _tiny_dataset(tmp_path / "data")
    ds = parse_dataset(root, _ConstantParser(), progress=False, overwrite=True)
    assert ds.meta["parser"] == "constant/1" and int(ds.parsing(1)[0, 0]) == 3
    assert read_marker(root / "parsing")["kind"] == "parsing"
    assert sorted(p.name for p in root.iterdir()) == ["frames", "landmarks.npz", "mattes", "meta.json", "parsing"]


def test_reparsing_keeps_a_parsing_folder_holding_a_users_file(tmp_path, caplog):
    from dynavatar.perceive import parse_dataset

    root = _tiny_dataset(tmp_path / "data")
    (root / "parsing" / "my_corrections.psd").write_bytes(b"hours of painting")
    with caplog.at_level(logging.WARNING, logger="dynavatar.io"):
        parse_dataset(root, _ConstantParser(), progress=False, overwrite=True)
    kept = [p for p in root.iterdir() if p.name.startswith(".parsing.old-")]
    assert len(kept) == 1 and (kept[0] / "my_corrections.psd").read_bytes() == b"hours of painting"
    assert str(kept[0]) in caplog.text
