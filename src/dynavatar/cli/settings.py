"""``--set FIELD=VALUE`` and ``--config FILE``: change any field of a stage's config dataclass from
the command line, typed and validated against the dataclass itself.

Nested dataclasses are addressed with dots (``reconstruct.lr.sh=0.01``); a bare name is accepted
when exactly one field of the tree has it (``steps`` in an ``EditConfig``), and an ambiguous or
unknown name is refused with the candidates listed. Values are parsed by the field's type, not
guessed: ``true``/``false`` for booleans, integers for ints, numbers for floats, comma-separated
numbers for tuples (``background=0,0,0``), ``none`` where a field may be None. A config file is
JSON or TOML, nested by stage or with dotted keys, and goes through the same checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["config_fields", "parse_settings", "apply_settings", "read_config_file"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_fields(config, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted field name -> (type hint, current value), for every leaf field of the dataclass tree."""
    out: dict[str, tuple[Any, Any]] = {}
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(config_fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (hints.get(f.name, type(value)), value)
    return out


def _resolve_name(name: str, fields: dict[str, tuple[Any, Any]]) -> str:
    if name in fields:
        return name
    matches = [k for k in fields if k.rsplit(".", 1)[-1] == name or k.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{name!r} is ambiguous: it could be {', '.join(sorted(matches))}; use the full name")
    raise ConfigError(f"unknown setting {name!r}; valid settings: {', '.join(sorted(fields))}")


def _options(hint) -> tuple[list, bool]:
    """The concrete types a hint allows, and whether None is one of them."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = list(typing.get_args(hint))
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _parse_one(text: str, kind) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError("true or false")
    if kind is int:
        return int(text)
    if kind is float:
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("a finite number")
        return value
    if kind is str:
        return text
    if origin is tuple:
        args = typing.get_args(kind)
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        item = args[0] if args else float
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse_one(p, item) for p in parts)
        if len(parts) != len(args):
            raise ValueError(f"{len(args)} comma-separated values")
        return tuple(_parse_one(p, a) for p, a in zip(parts, args))
    if typing.get_origin(kind) is typing.Literal:
        if text in typing.get_args(kind):
            return text
        raise ValueError(f"one of {typing.get_args(kind)}")
    raise ValueError(f"a {getattr(kind, '__name__', kind)} (not settable from the command line)")


def _describe(kinds: list, optional: bool) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    said = [words.get(k, "comma-separated numbers" if typing.get_origin(k) is tuple else str(k)) for k in kinds]
    return " or ".join(said + (["none"] if optional else []))


def _coerce(name: str, raw: Any, hint) -> Any:
    """``raw`` (text from --set, or a JSON/TOML value) -> a value of the field's type."""
    kinds, optional = _options(hint)
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be none; it takes {_describe(kinds, False)}")
    if not isinstance(raw, str):  # a typed value from a file: check it rather than re-parse
        if isinstance(raw, list):
            raw = ",".join(str(v) for v in raw)
        elif isinstance(raw, bool):
            if bool in kinds:
                return raw
            raise ConfigError(f"{name}={raw!r}: it takes {_describe(kinds, optional)}")
        else:
            raw = str(raw)
    # bool before str: "true" for a ``bool | str`` field means the flag, any other word the string
    for kind in sorted(kinds, key=lambda k: (k is str, k is not bool)):
        try:
            return _parse_one(raw, kind)
        except ValueError:
            continue
    raise ConfigError(f"{name}={raw!r}: it takes {_describe(kinds, optional)}")


# Leaf-name rules every stage's config follows: counts are whole and not negative (some at least 1),
# weights, learning rates and margins are not negative. Checked on what the user changed.
_AT_LEAST_ONE = ("resolution", "batch_size", "stride", "views_per_step", "splats_per_face", "max_frames")
_NOT_NEGATIVE_SUFFIX = ("steps", "every", "keyframes", "frames", "workers", "_margin", "_threshold")
_NOT_NEGATIVE_PREFIX = ("w_", "lr", "n_")


def _check_range(name: str, value: Any) -> None:
    leaf = name.rsplit(".", 1)[-1]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if leaf in _AT_LEAST_ONE or leaf.endswith("resolution"):
        if value < 1:
            raise ConfigError(f"{name}={value}: it must be at least 1")
    elif value < 0 and (leaf.endswith(_NOT_NEGATIVE_SUFFIX) or leaf.startswith(_NOT_NEGATIVE_PREFIX)
                        or any(part.startswith("lr") for part in name.split(".")[:-1])):
        raise ConfigError(f"{name}={value}: it cannot be negative")
    if leaf.endswith("fraction") and not 0 <= value < 1:
        raise ConfigError(f"{name}={value}: a fraction from 0 to below 1")


def _replace(config, dotted: str, value: Any):
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: _replace(getattr(config, head), rest, value)})


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON or TOML settings file -> {dotted name: value}. Nested tables and dotted keys both work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(errors="replace")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            tree = tomllib.loads(text)
        else:
            tree = json.loads(text)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a table of settings (FIELD = VALUE), not a {type(tree).__name__}")
    return _flatten(tree)


def parse_settings(config, items: tuple[str, ...] | list[str] = (),
                   file: str | os.PathLike | None = None) -> dict[str, Any]:
    """{full dotted name: typed value} for the file's settings, then each ``FIELD=VALUE`` of
    ``items`` (later ones win). Unknown, ambiguous or mistyped settings raise ``ConfigError``."""
    fields = config_fields(config)
    changes: list[tuple[str, Any]] = []
    if file is not None:
        changes += list(read_config_file(file).items())
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set steps=3000")
        changes.append((key.strip(), value.strip()))
    out: dict[str, Any] = {}
    for key, raw in changes:
        name = _resolve_name(key, fields)
        out[name] = _coerce(name, raw, fields[name][0])
        _check_range(name, out[name])
    return out


def apply_settings(config, items: tuple[str, ...] | list[str] = (), file: str | os.PathLike | None = None):
    """``config`` with ``parse_settings``' changes applied; the original is unchanged."""
    for name, value in parse_settings(config, items, file).items():
        config = _replace(config, name, value)
    return config
