"""``dynavatar view AVATAR``: the avatar in a local web viewer (``dynavatar.view``, built on viser).

The avatar is loaded (and checked: a missing or damaged folder is the CLI's one-line error) before
anything listens; a busy port moves the viewer to the next free one and the printed URL line says
so; Ctrl-C stops it. viser is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from .app import main
from .options import DEVICE, RESOLUTION

PORT = click.IntRange(min=1, max=65535)


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("--port", default=8080, show_default=True, type=PORT,
              help="Port to serve on (the next free one when it is busy).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for every network interface.")
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--max-size", default=None, type=RESOLUTION,
              help="Longest side of a still picture in pixels [default: 1024 on CUDA, 256 on a CPU].")
def view(avatar_dir: Path, port: int, host: str, device: str, max_size: int | None) -> None:
    """Open a saved avatar in a browser viewer: orbit, play its motion, move the face, show labels, edit."""
    from ..api import Avatar
    from ..view import require_viser, serve

    require_viser()  # before the avatar loads: a missing extra is the first thing to say
    avatar = Avatar.load(avatar_dir, device=device)
    serve(avatar, port=port, host=host, device=device, max_size=max_size, block=True)
    click.echo("viewer stopped")
