"""FLAME-format head models: safe loading, our own skinning, the embedded default head."""

from .file_format import FlameData, read_flame_file, write_flame_npz
from .model import FlameModel
from .params import FlameOutput, FlameParams
from .resolve import resolve_head_path

# Registration / embedding transfer (scipy KD-trees, sparse solves): imported on first use.
_TRANSFER = ("closest_point_on_mesh", "ensure_embedding", "register_mesh", "transfer_embedding")

__all__ = ["FlameData", "FlameModel", "FlameOutput", "FlameParams", "read_flame_file", "resolve_head_path",
           "write_flame_npz", *_TRANSFER]


def __getattr__(name: str):
    if name in _TRANSFER:
        from . import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module 'dynavatar.flame' has no attribute '{name}'")
