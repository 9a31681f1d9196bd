"""FLAME-format head models: safe loading, our own skinning, the embedded default head."""

import importlib

from .file_format import FlameData, read_flame_file, write_flame_npz
from .model import FlameModel
from .params import FlameOutput, FlameParams
from .resolve import resolve_head_path

# Embedding transfer and the mesh registration it uses (scipy KD-trees, sparse solves): imported on first
# use. The registration lives on the ground floor (geometry); these names stay reachable from here.
_LAZY = {"ensure_embedding": "dynavatar.flame.transfer", "transfer_embedding": "dynavatar.flame.transfer",
         "closest_point_on_mesh": "dynavatar.geometry.closest_point",
         "register_mesh": "dynavatar.geometry.registration"}

__all__ = ["FlameData", "FlameModel", "FlameOutput", "FlameParams", "read_flame_file", "resolve_head_path",
           "write_flame_npz", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dynavatar.flame' has no attribute '{name}'")
