"""Data-parallel training (``reconstruct/distributed.py``): two gloo processes on the CPU, set up by
accelerate exactly as ``accelerate launch`` does, must reproduce the single-process optimisation of
the same batches (the independent reference), densification included."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dynavatar.flame import FlameModel
from dynavatar.reconstruct import evaluate, fit_avatar, preset
from dynavatar.reconstruct.distributed import DataParallel
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer

sys.path.insert(0, str(Path(__file__).parent))
from flame_fixtures import ellipsoid_head  # noqa: E402


def _cfg():
    cfg = preset("tiny")
    cfg.steps, cfg.resolution, cfg.batch_size, cfg.log_every = 24, 48, 2, 4
    cfg.densify = dataclasses.replace(cfg.densify, refine_start=8, refine_stop=20, refine_every=8, grad_threshold=2e-4)
    return cfg


def _clip():
    torch.manual_seed(0)
    model = FlameModel(ellipsoid_head())
    renderer = TorchRenderer()
    return model, renderer, synthetic_clip(model, renderer, n_frames=8, resolution=48)


def _fit(parallel=None):
    model, renderer, data = _clip()
    return fit_avatar(data, model, renderer, _cfg(), progress=False, resume=False, parallel=parallel)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ACCELERATE_USE_CPU="true")
    torch.set_num_threads(1)
    dp = DataParallel()
    assert dp.active and dp.rank == rank
    res = _fit(dp)
    tensors = {k: v.detach().contiguous() for k, v in res.avatar.parameters_dict().items()}
    tensors["expr"] = res.params.expr.contiguous()
    tensors["binding"] = res.avatar.binding.contiguous()
    from safetensors.torch import save_file

    save_file(tensors, os.path.join(out, f"rank{rank}.safetensors"))
    dp.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_splits_every_batch_and_refuses_too_small_ones():
    dp = DataParallel(world_size=1)
    idx = torch.arange(5)
    assert torch.equal(dp.shard(idx), idx) and not dp.active
    dp2 = DataParallel.__new__(DataParallel)
    dp2.world_size, dp2.rank, dp2.device = 2, 1, None
    assert dp2.shard(idx[:4]).tolist() == [2, 3]
    with pytest.raises(ValueError, match="batch-size"):
        dp2.shard(idx)


@pytest.mark.timeout(300)
def test_two_processes_reproduce_the_single_process_fit(tmp_path):
    """Same batches, same densification decisions, identical copies in both processes; the
    parameters agree with one process to float-summation noise, which Adam's normalised steps
    amplify only where a gradient is ~0 (so the tails are bounded loosely, the bulk tightly)."""
    from safetensors.torch import load_file

    single = _fit()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "the two processes' copies drifted apart"
    assert single.avatar.num_splats > FlameModel(ellipsoid_head()).faces.shape[0]  # densification ran
    assert torch.equal(r0["binding"], single.avatar.binding)  # the same splats were cloned/split/pruned
    for k, v in single.avatar.parameters_dict().items():
        diff = (r0[k] - v).abs().reshape(len(v), -1).amax(1)
        assert diff.median() < 1e-3 and diff.quantile(0.9) < 1e-2 and diff.max() < 0.1, (k, diff.max())
    assert torch.allclose(r0["expr"], single.params.expr, atol=1e-4)
    model, renderer, data = _clip()
    parallel = single.avatar.replace(**{k: r0[k] for k in single.avatar.parameters_dict()})
    p_single = evaluate(single.avatar, single.params, data, single.model, renderer)["psnr"]
    p_parallel = evaluate(parallel, single.params, data, single.model, renderer)["psnr"]
    assert abs(p_single - p_parallel) < 0.05, (p_single, p_parallel)
