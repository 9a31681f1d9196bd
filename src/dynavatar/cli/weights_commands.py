"""``dynavatar download NAME|all``: fetch model weights ahead of time (e.g. before going offline).

The backends fetch their weights on first use anyway; this command does it now, with progress
bars, and checks what it has: a fresh download is hashed against the hub's record of each file, and
a copy already in the cache is hashed too, so `dynavatar download ip2p` also answers "is my copy
whole?". Errors follow the CLI's convention: a project error, printed as one line.
"""

from __future__ import annotations

import click

from ..weights import KNOWN_WEIGHTS
from .app import main

_NAMES = ", ".join(w.key for w in KNOWN_WEIGHTS)


@main.command(help=f"Fetch model weights into the standard caches (hashed; present ones verified). NAME: {_NAMES}, "
                   "a Hugging Face repo id 'org/name', or all.")
@click.argument("names", nargs=-1, required=True, metavar="NAME... | all")
@click.option("--revision", default=None, help="Hub revision to fetch (default: the one pinned for the model).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def download(names: tuple[str, ...], revision: str | None, quiet: bool) -> None:
    """Fetch model weights ahead of time (the help text is built from KNOWN_WEIGHTS above)."""
    from ..errors import ConfigError, DynavatarError
    from ..hub import offline_reason

    wanted = [w.key for w in KNOWN_WEIGHTS] if "all" in names else list(names)
    if "all" in names and revision:
        raise ConfigError("--revision applies to one model, not to all: name the model")
    if len(wanted) > 1 and offline_reason():
        raise ConfigError(f"cannot download: {offline_reason()} (or run this on a machine with internet)")
    failed = []
    for name in wanted:
        try:
            click.echo(_fetch(name, revision, not quiet))
        except DynavatarError as exc:
            if len(wanted) == 1:
                raise
            failed.append(name)
            click.secho(f"{name}: {exc}", fg="red", err=True)
    if failed:
        raise DynavatarError(f"{len(failed)} of {len(wanted)} could not be fetched ({', '.join(failed)}); "
                             "see the lines above")


def _fetch(name: str, revision: str | None, progress: bool) -> str:
    """Resolve ``name`` allowing downloads (HF_HUB_OFFLINE=1 still wins) and hash what is there."""
    from ..errors import ConfigError
    from ..hub import known_weights, offline_reason, resolve_weights, weights_status

    w = known_weights(name)
    before = weights_status(w, probe=False).state
    if before != "present" and offline_reason():
        raise ConfigError(f"cannot download {w.key}: {offline_reason()} (or run this on a machine with internet "
                          "and copy the cache)")
    path = resolve_weights(w, revision=revision, local_files_only=False, progress=progress, verify=True)
    how = "already present, verified" if before == "present" else "fetched and verified"
    return f"{w.key}: {how}: {path}"
