"""Posing an avatar for animation at the speed of the rasteriser.

FLAME's forward pass and the binding transform are a few dozen small kernels whose launch cost
from Python is of the same order as gsplat's rasterisation of a whole avatar. On CUDA,
:class:`GraphedPoser` captures both into one CUDA graph with static input buffers: each new frame
copies its parameters in and replays the graph (no Python per kernel, no host syncs). The
rasteriser itself has data-dependent sizes and stays outside the graph. On CPU it runs eagerly.
"""

from __future__ import annotations

import torch

from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar
from ..gaussians.binding import WorldGaussians, bind

__all__ = ["GraphedPoser"]


class GraphedPoser:
    """``poser(params) -> WorldGaussians`` for a fixed avatar, model and batch size (no gradients)."""

    def __init__(self, model: FlameModel, avatar: GaussianAvatar, batch: int = 1, use_graph: bool | None = None,
                 warmup: int = 3) -> None:
        self.model, self.avatar, self.batch = model, avatar, batch
        dev = avatar.means_local.device
        self.static = FlameParams.zeros(batch, model.n_shape, model.n_expr, device=dev,
                                        dtype=model.v_template.dtype)
        self.use_graph = (dev.type == "cuda") if use_graph is None else use_graph
        self.graph = None
        self.out: WorldGaussians | None = None
        if self.use_graph:
            self._capture(warmup)

    @torch.no_grad()
    def _eager(self, params: FlameParams) -> WorldGaussians:
        verts = self.model(params, landmark_set=None, check_finite=False).vertices
        return bind(self.avatar, verts, self.model.faces)

    @torch.no_grad()
    def _capture(self, warmup: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up builds kernels and allocator pools off the capture
            for _ in range(warmup):
                self._eager(self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._eager(self.static)

    @torch.no_grad()
    def __call__(self, params: FlameParams) -> WorldGaussians:
        if params.batch_size != self.batch:
            raise ValueError(f"this poser was built for batch {self.batch}, got {params.batch_size}")
        if self.graph is None:
            return self._eager(params)
        for name, t in self.static.fields():
            t.copy_(getattr(params, name), non_blocking=True)
        self.graph.replay()
        return self.out
