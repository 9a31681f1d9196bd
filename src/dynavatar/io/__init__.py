"""File formats: 3DGS .ply export/import (checkpoints and videos live beside it)."""

from .ply import PlySplats, export_ply, read_ply, write_ply

__all__ = ["PlySplats", "export_ply", "read_ply", "write_ply"]
