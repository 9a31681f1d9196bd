"""Renderers: a protocol, a pure-PyTorch reference (CPU) and a gsplat adapter (CUDA).

Nothing here imports gsplat until ``GsplatRenderer.render`` runs.
"""

from ..geometry.cameras import Cameras
from .gsplat_renderer import GsplatRenderer
from .torch_renderer import TorchRenderer
from .types import RenderOutput, Renderer

__all__ = ["Cameras", "GsplatRenderer", "RenderOutput", "Renderer", "TorchRenderer"]
