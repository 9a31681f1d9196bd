"""Renderers: a protocol, a pure-PyTorch reference (CPU) and a gsplat adapter (CUDA), and the rule
that picks one for a device (``renderer_for``).

Nothing here imports gsplat until ``GsplatRenderer.render`` runs.
"""

from ..geometry.cameras import Cameras
from .choose import renderer_for
from .gsplat_renderer import GsplatRenderer
from .torch_renderer import TorchRenderer
from .types import RenderOutput, Renderer

__all__ = ["Cameras", "GsplatRenderer", "RenderOutput", "Renderer", "TorchRenderer", "renderer_for"]
