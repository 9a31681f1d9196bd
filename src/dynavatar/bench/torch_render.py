"""``dynavatar bench torch-render``: forward + backward time of the CPU reference renderer.

A shell of N splats around a head-sized sphere seen from 0.5 m (most splats visible, a realistic
overlap), one camera, median of ``iters`` runs after one warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["run_torch_render_bench"]


def run_torch_render_bench(n_splats: int = 20_000, resolution: int = 128, iters: int = 3, chunk: int = 64) -> dict:
    from ..gaussians.binding import WorldGaussians
    from ..geometry.cameras import Cameras
    from ..render.torch_renderer import TorchRenderer

    g = torch.Generator().manual_seed(0)
    d = torch.randn(n_splats, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    leaves = [
        (0.1 * d * (1 + 0.05 * torch.rand(n_splats, 1, generator=g)))[None],
        torch.randn(1, n_splats, 4, generator=g),
        0.004 * torch.exp(0.3 * torch.randn(1, n_splats, 3, generator=g)),
        0.2 + 0.75 * torch.rand(n_splats, generator=g),
        torch.rand(n_splats, 3, generator=g),
    ]
    cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 0.5]]), width=resolution, height=resolution, fov_y_deg=30.0)
    renderer = TorchRenderer(chunk=chunk)
    fwd, bwd = [], []
    for it in range(iters + 1):
        ts = [t.clone().requires_grad_(True) for t in leaves]
        t0 = time.perf_counter()
        out = renderer.render(WorldGaussians(*ts), cams, background=torch.ones(3))
        t1 = time.perf_counter()
        out.rgb.sum().backward()
        t2 = time.perf_counter()
        if it:  # the first run is a warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return {"splats": n_splats, "resolution": resolution, "threads": torch.get_num_threads(),
            "visible": int((out.radii > 0).sum()), "forward_s": statistics.median(fwd),
            "backward_s": statistics.median(bwd), "total_s": statistics.median([a + b for a, b in zip(fwd, bwd)])}
