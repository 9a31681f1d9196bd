"""FLAME-format head models: safe loading, our own skinning, the embedded default head."""

from .file_format import FlameData, read_flame_file, write_flame_npz
from .model import FlameModel
from .params import FlameOutput, FlameParams
from .resolve import resolve_head_path

__all__ = ["FlameData", "FlameModel", "FlameOutput", "FlameParams", "read_flame_file", "resolve_head_path",
           "write_flame_npz"]
