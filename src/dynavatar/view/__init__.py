"""``dynavatar view``: a browser viewer to orbit, animate, inspect labels and try edits.

Built on viser (``pip install 'dynavatar[view]'``), like the viewers of gsplat and nerfstudio: the
browser's camera drives our renderer (gsplat on CUDA, the PyTorch renderer at a reduced size on a
CPU), a timeline plays the clip's tracked motion, sliders move the jaw, head, gaze and the first
expression components, toggles show the semantic labels (with a legend), one label isolated or the
splat centres, and a panel plans, applies and saves text edits and opens a second avatar beside the
first. Modules: ``server`` (``serve``, ``ViewerHandle``), ``controls`` (the GUI panel), ``edits``
(edit, save, compare), ``scene`` (what is drawn), ``camera`` (browser camera <-> ``Cameras``, sizes),
``render_loop`` (latest-request render threads). viser is imported when ``serve`` runs.
"""

from .server import Sent, ViewerHandle, free_port, require_viser, serve

__all__ = ["serve", "ViewerHandle", "Sent", "free_port", "require_viser"]
