"""The ``dynavatar`` command group and its error boundary.

Every command runs inside ``GuardedGroup.invoke``: a project error (``DynavatarError``) becomes one
red line and exit code 2, an OS error (disk full, read-only folder) one line naming the path, Ctrl-C
one line and exit code 130, and anything unexpected one line that says to run again with
``--debug`` for the traceback. No traceback reaches a user unless they ask for it.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from .. import __version__
from ..errors import DynavatarError, RunInterrupted

__all__ = ["main", "fail"]


def fail(exc: Exception | str, code: int = 2) -> None:
    """Print an error as one clear line and exit with ``code``, without a traceback."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _os_error_line(exc: OSError) -> str:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{where}; check that the path exists, is writable and the disk has space"


class GuardedGroup(click.Group):
    """A click group whose subcommands never print a traceback unless ``--debug`` is given, and
    whose usage errors (a bad number, an unknown option) are one line instead of click's four."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            click.secho(f"error: {exc.format_message()}{where}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.secho(f"error: {exc.format_message()}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.secho("interrupted", fg="yellow", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except DynavatarError as exc:
            if _debug(ctx):
                raise
            fail(exc, code=130 if isinstance(exc, RunInterrupted) else 2)
        except KeyboardInterrupt:
            click.secho("interrupted (nothing half-written was kept; run the same command to resume)",
                        fg="yellow", err=True)
            sys.exit(130)
        except OSError as exc:
            if _debug(ctx):
                raise
            fail(_os_error_line(exc))
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
            if _debug(ctx):
                raise
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(f"unexpected {type(exc).__name__}{': ' + text if text else ''} "
                 "(run with --debug for the traceback, and please report it)", code=1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("DYNAVATAR_DEBUG", "") not in ("", "0")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if verbose:  # third-party native logs (mediapipe/absl/TF-Lite) are quiet unless asked for
        from ..perceive.quiet import set_verbose

        set_verbose(True)


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dynavatar")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, including the third-party libraries' own logs.")
@click.option("--debug", is_flag=True, help="Show the full traceback of an unexpected error.")
def main(verbose: bool, debug: bool) -> None:
    """Animatable, text-editable 3D Gaussian head avatars from ordinary videos."""
    _setup_logging(verbose)


@main.command()
def info() -> None:
    """Versions, head model in use, CUDA/gsplat, and which optional weights are cached."""
    from ..info import collect_info, format_info

    click.echo(format_info(collect_info()))
