"""What a pickle may allocate: the limits, the running budget, and the checkers that price a call
*before* it runs (``safe_pickle.py`` calls them from its unpickler).

Allowed is not the same as harmless: ``numpy.ndarray((10**12,))``, ``bytes(10**10)`` or a list
nested 40 deep whose levels share one child (2**40 leaves once printed, hashed or turned into an
array) are each a few bytes of pickle. A real FLAME file's arrays are about as large as the file,
so the budget grows with the file size (``PickleLimits.for_size``) and every refusal names what
would have been allocated: ``FILE: refused, ... would allocate N GB; not a FLAME file?``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FlameFileError

__all__ = ["PickleLimits", "Budget", "fmt_bytes", "charge_array", "walk", "numpy_core", "CALL_CHECKS",
           "MAX_ARRAY_BYTES"]

MAX_ARRAY_BYTES = 512 << 20  # all arrays of one file together; FLAME 2023 holds about 0.1 GB
MAX_ARRAY_ELEMENTS = 1 << 27  # one array or container; FLAME's largest (shapedirs) has 5023*3*400 = 6e6
MAX_DEPTH = 100
MAX_OBJECTS = 1_000_000  # stack + memo entries; real FLAME files hold a few hundred
MAX_NODES = 10_000_000  # the loaded object as a tree (about 3 s to walk at most)


@dataclasses.dataclass(frozen=True)
class PickleLimits:
    """What one pickle may make. ``for_size`` derives them from the file size."""

    max_bytes: int = MAX_ARRAY_BYTES  # bytes of arrays, buffers and copies made by calls, together
    max_elements: int = MAX_ARRAY_ELEMENTS  # elements of any one array or container
    max_depth: int = MAX_DEPTH  # MARK nesting while loading; tree depth of the result
    max_objects: int = MAX_OBJECTS  # stack + memo entries at any time
    max_nodes: int = 20_000  # nodes of the result walked as a tree (shared children each time)

    @classmethod
    def for_size(cls, n_bytes: int) -> "PickleLimits":
        """The arrays of a FLAME file are about its own size: allow 32x + 8 MiB, at most 512 MiB."""
        return cls(max_bytes=min(MAX_ARRAY_BYTES, 32 * n_bytes + (8 << 20)),
                   max_nodes=min(MAX_NODES, 20_000 + 2 * n_bytes))  # arrays are one node: FLAME has ~100


def fmt_bytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


class Budget:
    """Running total of what one pickle made; ``charge`` refuses before a step would go over."""

    def __init__(self, limits: PickleLimits, source: str) -> None:
        self.limits, self.source, self.spent = limits, source, 0

    def refuse(self, what: str) -> FlameFileError:
        return FlameFileError(f"{self.source}: refused, {what}; not a FLAME file?")

    def charge(self, n_bytes: int, what: str) -> None:
        total = self.spent + n_bytes
        if total > self.limits.max_bytes:
            raise self.refuse(f"{what} would allocate {fmt_bytes(n_bytes)} ({fmt_bytes(total)} in all; at most "
                              f"{fmt_bytes(self.limits.max_bytes)} for this file)")
        self.spent = total

    def count(self, n: int, what: str) -> None:
        if n > self.limits.max_elements:
            raise self.refuse(f"{what} has {n:,} elements (at most {self.limits.max_elements:,})")


# ============================================================================ arrays
def _as_dtype(dtype: Any, budget: Budget) -> np.dtype:
    """dtypes come as dtype objects or short type strings ('f8', 'O8', b'b'); nothing else is read."""
    if isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, (str, bytes)) and len(dtype) <= 64:
        try:
            return np.dtype(dtype)
        except TypeError as exc:
            raise FlameFileError(f"{budget.source}: invalid dtype {dtype!r} in the pickle ({exc})") from None
    raise budget.refuse(f"a dtype given as {type(dtype).__name__}")


def _shape_tuple(shape: Any, budget: Budget) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) > 64 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
        raise budget.refuse(f"an array shape given as {type(shape).__name__}")
    return tuple(int(s) for s in shape)


def charge_array(shape: Any, dtype: Any, budget: Budget) -> None:
    """[prod(shape)] elements of ``dtype``, charged at >= 8 bytes each (the loader makes float64 of them)."""
    dims = _shape_tuple(shape, budget)
    dt = _as_dtype(dtype, budget)
    n = math.prod(max(s, 0) for s in dims)
    per_element = max(dt.itemsize, 8)
    if dt.subdtype is not None:  # numpy appends a sub-array's shape to the array's
        per_element = max(per_element, math.prod(dt.subdtype[1]) * max(dt.subdtype[0].itemsize, 8))
    what = f"an array of shape {dims} {dt}"
    budget.charge(n * per_element, what)
    budget.count(n, what)


# ============================================================================ calls
def _check_reconstruct(args: tuple, budget: Budget) -> None:  # _reconstruct(ndarray, shape, dtype)
    if len(args) != 3 or args[0] is not np.ndarray:
        raise budget.refuse("numpy _reconstruct called with unexpected arguments")
    charge_array(args[1], args[2], budget)


def _check_ndarray(args: tuple, budget: Budget) -> None:  # ndarray(shape, dtype=float, buffer, ...)
    if not args:
        raise budget.refuse("numpy.ndarray called without a shape")
    charge_array(args[0], args[1] if len(args) > 1 and args[1] is not None else "f8", budget)


def _check_frombuffer(args: tuple, budget: Budget) -> None:  # _frombuffer(buf, dtype, shape, order)
    if len(args) != 4:
        raise budget.refuse("numpy _frombuffer called with unexpected arguments")
    charge_array(args[2], args[1], budget)


def _check_scalar(args: tuple, budget: Budget) -> None:  # scalar(dtype, bytes)
    if not args:
        raise budget.refuse("numpy scalar called without a dtype")
    budget.charge(_as_dtype(args[0], budget).itemsize, "a numpy scalar")


_SCALARS = (str, bytes, bytearray, int, float, complex, bool, type(None), np.generic)


def _check_scalar_args(args: tuple, budget: Budget) -> None:
    """int/float/str/slice/range of scalars only: ``str(x)`` of a shared-subtree list is exponential."""
    for a in args:
        if not isinstance(a, _SCALARS):
            raise budget.refuse(f"a builtin called on a {type(a).__name__}")
        if isinstance(a, (str, bytes, bytearray)):
            budget.charge(len(a), "a copy of a string")


def _check_dtype_call(args: tuple, budget: Budget) -> None:  # dtype('f8', False, True)
    if args:
        _as_dtype(args[0], budget)
    _check_scalar_args(args[1:], budget)


_CONTAINERS = (list, tuple, set, frozenset, dict, str, bytes, bytearray)


def _container_arg(args: tuple, budget: Budget) -> Any:
    """The one argument of list/tuple/set/frozenset/dict: a container the pickle already made (no
    range, array or iterator that would expand), charged as a copy."""
    if len(args) > 1 or (args and not isinstance(args[0], _CONTAINERS)):
        raise budget.refuse(f"a container built from {type(args[0]).__name__ if args else 'several arguments'}")
    if not args:
        return ()
    budget.count(len(args[0]), "a container")
    budget.charge(64 * len(args[0]), "a container copy")
    return args[0]


def _check_sequence_call(args: tuple, budget: Budget) -> None:  # list(x), tuple(x)
    _container_arg(args, budget)


def _check_bytes_call(args: tuple, budget: Budget) -> None:
    """bytes(n) / bytearray(n) allocate n bytes: ``bytes(10**10)`` is eight bytes of pickle."""
    if not args:
        return
    first = args[0]
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
        budget.charge(max(int(first), 0), "bytes(n)")
    elif isinstance(first, (str, bytes, bytearray, list, tuple)):
        budget.charge(4 * len(first), "a bytes copy")
    else:
        raise budget.refuse(f"bytes built from a {type(first).__name__}")
    _check_scalar_args(args[1:], budget)


_TEXT_CODECS = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "utf-8", "utf8", "ascii"}


def _check_encode(args: tuple, budget: Budget) -> None:
    """``_codecs.encode(text, 'latin1')`` is how Python 3 pickles bytes at protocol 2; other codecs are refused."""
    if len(args) not in (1, 2) or not isinstance(args[0], str) or (
            len(args) == 2 and (not isinstance(args[1], str) or args[1].lower() not in _TEXT_CODECS)):
        raise budget.refuse("_codecs.encode called with an unexpected codec")
    latin1 = len(args) == 2 and args[1].lower() not in ("utf-8", "utf8")
    budget.charge((1 if latin1 else 4) * len(args[0]), "an encoded string")


def _no_cost(args: tuple, budget: Budget) -> None:
    """Calls that allocate nothing the file did not hold already (``object()``)."""


def numpy_core(sub: str) -> Any:
    """numpy>=2 moved ``numpy.core`` to ``numpy._core``; pickles name either."""
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{prefix}.{sub}")
        except ImportError:
            continue
    raise ImportError(sub)  # pragma: no cover


def _call_checks() -> dict[Any, Callable[[tuple, Budget], None]]:
    """numpy / builtin callable -> the checker that prices a call to it (containers that hash their
    items, set/frozenset/dict, are priced in ``safe_pickle``, which knows how to walk the items)."""
    import codecs

    multiarray, numeric = numpy_core("multiarray"), numpy_core("numeric")
    out: dict[Any, Callable[[tuple, Budget], None]] = {
        multiarray._reconstruct: _check_reconstruct, multiarray.scalar: _check_scalar,
        np.ndarray: _check_ndarray, np.dtype: _check_dtype_call, codecs.encode: _check_encode, object: _no_cost,
        tuple: _check_sequence_call, list: _check_sequence_call, bytes: _check_bytes_call,
        bytearray: _check_bytes_call,
        **{t: _check_scalar_args for t in (slice, complex, int, float, bool, str, range)},
    }
    if getattr(numeric, "_frombuffer", None) is not None:
        out[numeric._frombuffer] = _check_frombuffer
    return out


CALL_CHECKS = _call_checks()


# ============================================================================ trees
_BUILTIN_CONTAINERS = (list, tuple, dict, set, frozenset)
_LEAVES = frozenset({str, bytes, int, float, bool, type(None), complex})
_EXIT = object()


def walk(root: Any, budget: Budget, children: Callable[[Any], Sequence[Any]], max_nodes: int,
         what: str = "the unpickled object") -> None:
    """Visit ``root`` as a tree, the way repr / np.asarray / hashing would (a shared child once per
    parent): refuse more than ``max_nodes`` nodes, ``max_depth`` levels, or a list / dict / tuple / set
    that contains itself (np.asarray would expand it to its 32-dimension limit). A cycle through
    another object (a chumpy stand-in's state naming the stand-in) is harmless and stops the walk."""
    max_depth = budget.limits.max_depth
    nodes, on_path = 0, set()
    todo: list[Any] = [root, 0]  # flat pairs (object, depth); an exit mark closes a node: (_EXIT, id)
    while todo:
        depth, obj = todo.pop(), todo.pop()
        if obj is _EXIT:
            on_path.discard(depth)  # for an exit mark, "depth" holds the id of the node it closes
            continue
        nodes += 1
        if nodes > max_nodes:
            raise budget.refuse(f"{what} expands to more than {max_nodes:,} nested items (shared sub-lists "
                                "repeated) and would allocate without bound once read")
        if type(obj) in _LEAVES:
            continue
        if id(obj) in on_path:  # a cycle: repr stops here, but np.asarray / hashing of containers do not
            if isinstance(obj, _BUILTIN_CONTAINERS):
                raise budget.refuse(f"{what} holds a {type(obj).__name__} that contains itself")
            continue
        kids = children(obj)
        if not kids:
            continue
        if depth >= max_depth:
            raise budget.refuse(f"{what} nests deeper than {max_depth} levels")
        budget.count(len(kids), "a container")
        on_path.add(id(obj))
        todo += (_EXIT, id(obj))
        for kid in kids:
            todo += (kid, depth + 1)
