"""Fused CUDA kernel for the binding transform, with the PyTorch reference as fallback.

Source: ``cuda/binding.cu`` at the repository root (DESIGN.md §2: "CUDA sources for the
project's own kernels, built on first use"). It is located relative to this file
(``<repo>/src/dynavatar/gaussians/ -> <repo>/cuda``); a copy shipped as package data next to this
module (``dynavatar/gaussians/cuda/binding.cu``) is also searched, so wheels can carry it.
The extension is compiled with ``torch.utils.cpp_extension.load`` the first time a CUDA tensor
asks for it; nothing is compiled at import.

Selection (``backend="auto"``): CUDA tensors, a CUDA toolkit that builds the kernel, and
``DYNAVATAR_NO_CUDA_EXT`` not set to 1 -> kernel; otherwise ``bind_transform_torch``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .transform import bind_transform_torch

__all__ = ["bind_transform", "bind_transform_cuda", "cuda_extension_available", "load_extension"]

_EXT = None
#: Why the build failed, as text: a stored exception would be raised again on every bind, and each
#: raise prepends the caller's frames to its traceback, which then keeps every step's tensors (and
#: their autograd graphs) alive: 40 GiB of GPU memory by step 7000 of a fit where nvcc was missing.
_EXT_ERROR: str | None = None
_AVAILABLE: bool | None = None  # cuda_extension_available()'s answer, decided once


def _source_path() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / "cuda" / "binding.cu", here.parents[2] / "cuda" / "binding.cu"):
        if cand.is_file():
            return cand
    raise FileNotFoundError("cuda/binding.cu not found next to the package or at the repo root")


def load_extension(verbose: bool = False):
    """Build (first call) and return the extension module; raises on failure."""
    global _EXT, _EXT_ERROR
    if _EXT is not None:
        return _EXT
    if _EXT_ERROR is not None:
        raise RuntimeError(f"the binding kernel did not build: {_EXT_ERROR}")  # a fresh one: no frames kept
    try:
        from torch.utils.cpp_extension import load

        _EXT = load(
            name="dynavatar_binding",
            sources=[str(_source_path())],
            extra_cuda_cflags=["-O3"],  # no fast-math: results track the float32 reference
            verbose=verbose,
        )
    except Exception as exc:  # compiler missing, no CUDA toolkit, build error
        _EXT_ERROR = f"{type(exc).__name__}: {exc}"
        raise
    return _EXT


def cuda_extension_available() -> bool:
    """Whether the kernel runs here; decided (and the PyTorch fallback warned about) once per process."""
    global _AVAILABLE
    if os.environ.get("DYNAVATAR_NO_CUDA_EXT", "0") == "1" or not torch.cuda.is_available():
        return False
    if _AVAILABLE is None:
        try:
            load_extension()
            _AVAILABLE = True
        except Exception as exc:  # noqa: BLE001 - any build failure means the fallback
            warnings.warn(f"dynavatar: binding CUDA kernel unavailable, using PyTorch ({exc})")
            _AVAILABLE = False
    return _AVAILABLE


class _BindTransformFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices, faces, binding, means_l, quats_l, log_scales_l):
        ext = load_extension()
        ctx.dtype = vertices.dtype
        vertices_c = vertices.float().contiguous()
        args = (faces.int().contiguous(), binding.int().contiguous(), means_l.float().contiguous(),
                quats_l.float().contiguous(), log_scales_l.float().contiguous())
        means, quats, scales = ext.forward(vertices_c, *args)
        ctx.save_for_backward(vertices_c, *args)
        return means, quats, scales

    @staticmethod
    def backward(ctx, g_means, g_quats, g_scales):
        ext = load_extension()
        vertices, faces, binding, means_l, quats_l, log_scales_l = ctx.saved_tensors
        B, N = vertices.shape[0], means_l.shape[0]
        z = lambda g, d: vertices.new_zeros(B, N, d) if g is None else g
        g_means, g_quats, g_scales = z(g_means, 3), z(g_quats, 4), z(g_scales, 3)
        g_v, g_m, g_q, g_s = ext.backward(
            vertices, faces, binding, means_l, quats_l, log_scales_l,
            g_means.float().contiguous(), g_quats.float().contiguous(), g_scales.float().contiguous(),
        )
        return g_v.to(ctx.dtype), None, None, g_m, g_q, g_s


def bind_transform_cuda(vertices, faces, binding, means_local, quats_local, log_scales_local):
    """Same contract as ``bind_transform_torch`` (float32 CUDA tensors), through the kernel."""
    return _BindTransformFn.apply(vertices, faces, binding, means_local, quats_local, log_scales_local)


def bind_transform(
    vertices: Tensor,  # [B, V, 3]
    faces: Tensor,  # [F, 3]
    binding: Tensor,  # [N]
    means_local: Tensor,  # [N, 3]
    quats_local: Tensor,  # [N, 4]
    log_scales_local: Tensor,  # [N, 3]
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Dispatch to the kernel or the PyTorch reference (see module docstring)."""
    if backend not in ("auto", "torch", "cuda"):
        raise ValueError(f"backend must be auto, torch or cuda, not {backend!r}")
    use_cuda = backend == "cuda" or (
        backend == "auto"
        and vertices.is_cuda
        and vertices.dtype == torch.float32
        and cuda_extension_available()
    )
    if use_cuda:
        return bind_transform_cuda(vertices, faces, binding, means_local, quats_local, log_scales_local)
    return bind_transform_torch(vertices, faces, binding, means_local, quats_local, log_scales_local)
