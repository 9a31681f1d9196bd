"""Validated command-line values shared by the commands: devices, ranged numbers, settings.

Bad values stop at parsing with click's one-line usage error (exit code 2) before any model loads
or any file is touched: ``--steps -5``, ``--resolution 0``, ``--device banana``.
"""

from __future__ import annotations

import click

__all__ = ["DEVICE", "POSITIVE", "NON_NEGATIVE", "RESOLUTION", "DEGREES", "settings_options"]

POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
RESOLUTION = click.IntRange(min=16, max=4096)
DEGREES = click.FloatRange(min=-180.0, max=180.0)
FPS = click.FloatRange(min=0.0, min_open=True, max=1000.0)


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against what this machine has."""

    name = "device"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text == "auto":
            return text
        from ..errors import DynavatarError

        try:
            from ..device import resolve_device

            resolve_device(text)
        except (DynavatarError, RuntimeError, ValueError) as exc:
            msg = str(exc).splitlines()[0]
            prefix = f"--device {text}: "
            msg = msg[len(prefix):] if msg.startswith(prefix) else msg
            if not isinstance(exc, DynavatarError):
                msg = f"{value!r} is not a device; use auto, cpu, cuda or cuda:N"
            self.fail(msg, param, ctx)
        return text


DEVICE = DeviceType()


def settings_options(what: str):
    """``--set FIELD=VALUE`` (repeatable) and ``--config FILE`` for the config class named ``what``."""

    def decorate(fn):
        fn = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                          help=f"JSON or TOML file of {what} settings (applied before --set).")(fn)
        return click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
                            help=f"Change one {what} setting, e.g. --set steps=3000 (repeatable; dotted names "
                                 "reach nested fields; a wrong name lists the valid ones).")(fn)

    return decorate
