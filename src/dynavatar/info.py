"""What ``dynavatar info`` reports: versions, head model, CUDA/gsplat, and for each known model's
weights whether they are present (cached, whole), fetchable (downloads allowed and the host answers
within a few seconds) or neither.

Reads package versions from metadata instead of importing the packages, so it stays fast and
works even when an optional package is broken. With ``HF_HUB_OFFLINE=1`` no host is asked.
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


def collect_info(probe: bool = True) -> dict[str, Any]:
    """Everything ``dynavatar info`` prints; ``probe=False`` asks no host whether absent weights are fetchable."""
    import torch

    from . import __version__
    from .errors import DynavatarError
    from .flame.resolve import resolve_head_path
    from .hub import all_weights_status

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
    info["weights"] = {st.weights.key: {"name": st.weights.name, "used_for": st.weights.used_for, "state": st.state,
                                        "path": str(st.path) if st.path else None, "detail": st.detail}
                       for st in all_weights_status(probe=probe)}
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
              f"gsplat: {info['gsplat']}", "",
              "optional weights (present: cached; fetchable: fetched on first use or by `dynavatar download NAME`):"]
    for key, w in info["weights"].items():
        lines.append(f"  {w['state']:<9} {key:<12} {w['name']:<33} {w['used_for']}")
        lines.append(f"            {w['path'] or w['detail']}")
    return "\n".join(lines)
