"""File formats: 3DGS .ply export/import here; beside it checkpoints (``checkpoint``: safetensors +
JSON), a saved avatar's folder (``avatar_files``), videos (``video``) and atomic writes (``atomic``).

Only the .ply names load with the package: the stages import the others by module path, and this
package stays below them (``atomic`` is used by FLAME, tracking and parsing alike).
"""

from .ply import PlySplats, export_ply, read_ply, write_ply

__all__ = ["PlySplats", "export_ply", "read_ply", "write_ply"]
