"""The CLI's error boundary: one line per failure, the right exit code, a traceback only on --debug."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from dynavatar.cli.app import GuardedGroup
from dynavatar.errors import ConfigError


def _group(exc: BaseException) -> click.Group:
    @click.group(cls=GuardedGroup)
    @click.option("--debug", is_flag=True)
    def root(debug):
        pass

    @root.command()
    def go():
        raise exc

    return root


@pytest.mark.parametrize("exc, code, words", [
    (ConfigError("--frame 9: this avatar's clip has frames 0..3"), 2, ["error: --frame 9"]),
    (OSError(28, "No space left on device", "/data/out.mp4"), 2, ["No space left", "/data/out.mp4"]),
    (KeyError("n_shape"), 1, ["unexpected KeyError", "--debug"]),
    (ZeroDivisionError("division by zero\nsecond line"), 1, ["unexpected ZeroDivisionError: division by zero"]),
    (KeyboardInterrupt(), 130, ["interrupted"]),
])
def test_failures_are_one_line_without_a_traceback(exc, code, words):
    r = CliRunner().invoke(_group(exc), ["go"])
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert all(w in r.output for w in words), r.output


def test_debug_shows_the_real_exception():
    r = CliRunner().invoke(_group(KeyError("n_shape")), ["--debug", "go"])
    assert isinstance(r.exception, KeyError)


def test_click_usage_errors_pass_through_unchanged():
    r = CliRunner().invoke(_group(ValueError("x")), ["nope"])
    assert r.exit_code == 2 and "No such command" in r.output
