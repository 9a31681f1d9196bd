"""Which renderer a device gets: one rule for the facade, the demo and the benchmarks.

gsplat's rasteriser needs CUDA, so a CUDA device gets ``GsplatRenderer``; everything else gets the
pure-PyTorch ``TorchRenderer`` (the reference, and the only one that runs on a CPU). Neither
constructor imports gsplat: ``GsplatRenderer`` loads it on its first render.
"""

from __future__ import annotations

import torch

from .gsplat_renderer import GsplatRenderer
from .torch_renderer import TorchRenderer
from .types import Renderer

__all__ = ["renderer_for"]


def renderer_for(device: str | torch.device) -> Renderer:
    """A fresh renderer for ``device``: ``GsplatRenderer`` on CUDA, ``TorchRenderer`` elsewhere."""
    return GsplatRenderer() if torch.device(device).type == "cuda" else TorchRenderer()
