"""What ``dynavatar info`` reports: versions, head model, CUDA/gsplat, cached weights.

Reads package versions from metadata instead of importing the packages, so it stays fast and
works even when an optional package is broken.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

__all__ = ["collect_info", "format_info"]

PACKAGES = ("torch", "numpy", "gsplat", "mediapipe", "diffusers", "transformers", "accelerate",
            "safetensors", "imageio-ffmpeg", "opencv-contrib-python", "pyfacer", "torchvision")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def collect_info() -> dict[str, Any]:
    import torch

    from . import __version__
    from .errors import DynavatarError
    from .flame.resolve import resolve_head_path
    from .weights import KNOWN_WEIGHTS, find_weights

    info: dict[str, Any] = {"dynavatar": __version__, "python": platform.python_version()}
    info["packages"] = {p: _version(p) for p in PACKAGES}
    try:
        head = resolve_head_path()
        info["head"] = {"path": str(head.path), "source": head.source}
    except DynavatarError as exc:
        info["head"] = {"error": str(exc)}
    cuda = torch.cuda.is_available()
    info["cuda"] = {"available": cuda, "torch_cuda": torch.version.cuda,
                    "device": torch.cuda.get_device_name(0) if cuda else None}
    gs = info["packages"]["gsplat"]
    info["gsplat"] = ("usable" if gs and cuda else
                      f"installed ({gs}) but needs CUDA for rasterization" if gs else "not installed")
    info["weights"] = {w.name: {"used_for": w.used_for, "path": str(p) if (p := find_weights(w)) else None}
                       for w in KNOWN_WEIGHTS}
    return info


def format_info(info: dict[str, Any]) -> str:
    lines = [f"dynavatar {info['dynavatar']}  (python {info['python']})", "", "packages:"]
    lines += [f"  {k:<22} {v or '-'}" for k, v in info["packages"].items()]
    head = info["head"]
    lines += ["", "head model:", f"  {head.get('path') or head.get('error')}" +
              (f"  [{head['source']}]" if "source" in head else "")]
    if head.get("source") == "default":
        lines.append("  (embedded default head; put a FLAME file in assets/flame/ or set DYNAVATAR_FLAME)")
    c = info["cuda"]
    lines += ["", f"cuda: {'yes, ' + c['device'] if c['available'] else 'no'} (torch built with CUDA {c['torch_cuda'] or '-'})",
              f"gsplat: {info['gsplat']}", "", "optional weights in local caches:"]
    for name, w in info["weights"].items():
        lines.append(f"  {'[x]' if w['path'] else '[ ]'} {name:<24} {w['used_for']}" + (f"  {w['path']}" if w["path"] else ""))
    return "\n".join(lines)
