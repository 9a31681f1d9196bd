"""Restricted, bounded unpickling of FLAME model files.

Official FLAME pickles (2020, 2023, 2023 Open) were written by Python 2 with ``chumpy`` installed:
some arrays are chumpy ``Ch`` objects and ``J_regressor`` is a ``scipy.sparse`` matrix. chumpy
cannot be installed on current Python/numpy, and a plain ``pickle.load`` of a downloaded file runs
whatever code the file names. So we unpickle through an allowlist:

* numpy's array/dtype/scalar reconstructors and a few inert builtins are allowed;
* any ``chumpy.*`` class becomes :class:`ChumpyStandIn`, which only records its state;
* ``scipy.sparse`` matrix classes become :class:`SparseStandIn`, which only records its state
  (no scipy needed), and :func:`to_numpy` densifies it with plain numpy;
* every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) is refused with
  :class:`~dynavatar.errors.FlameFileError` naming it, before anything is called.

The allowed calls can still allocate without bound from a few bytes, so loading is also bounded
(``pickle_bounds.py`` holds the limits and prices). The loader is the pure-Python
``pickle._Unpickler``, whose opcode table can be wrapped and whose memo is a dict (the C one sizes
a table by the largest memo index a file names). On top of it:

* every call an opcode makes (REDUCE, NEWOBJ, OBJ/INST) and ``ndarray.__setstate__`` (BUILD) is
  priced *before* it runs; the bytes of all arrays together and the elements of any one are capped;
* opcodes may only fill the containers they are made for (APPEND on lists, SETITEM on dicts,
  ADDITEMS on sets; BUILD on arrays, dtypes and stand-ins): SETITEM on an ndarray would convert
  any nested list; NEWOBJ makes stand-ins only (``bytearray.__new__(n)`` would allocate);
* stack + memo hold at most ``max_objects`` entries, MARKs nest at most ``max_depth`` deep, and
  keys of dicts and sets must be small (hashing a shared-subtree tuple walks every leaf);
* the result is walked once as a tree (``pickle_bounds.walk``: node and depth caps), and each
  sparse matrix's dense size is charged, since ``to_numpy`` will make it.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import pickle
import struct
from typing import Any, Callable

import numpy as np

from ..errors import FlameFileError
from .pickle_bounds import (CALL_CHECKS, MAX_ARRAY_BYTES, Budget, PickleLimits, charge_array, fmt_bytes, numpy_core,
                            walk)

__all__ = ["ChumpyStandIn", "SparseStandIn", "PickleLimits", "safe_load_pickle", "to_numpy"]

_KEY_NODES = 1_000  # a dict key or set item: real ones are strings


# ============================================================================ stand-ins
class ChumpyStandIn:
    """Inert replacement for any chumpy class: keeps the pickled state, runs nothing."""

    chumpy_class = "chumpy.Ch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401 - called by NEWOBJ
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class SparseStandIn:
    """Inert replacement for ``scipy.sparse`` csc/csr/coo matrices: keeps the pickled state."""

    sparse_format = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


_STAND_INS = (ChumpyStandIn, SparseStandIn)


def _chumpy_class(module: str, name: str) -> type:
    return type(name, (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})


def _sparse_class(fmt: str) -> type:
    return type(f"{fmt}_matrix_standin", (SparseStandIn,), {"sparse_format": fmt})


def _is_stand_in_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, _STAND_INS)


# ============================================================================ allowlist
_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric"}
_multiarray = numpy_core("multiarray")
_NUMPY_NAMES = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "ndarray": np.ndarray,
    "dtype": np.dtype,
    "_frombuffer": getattr(numpy_core("numeric"), "_frombuffer", None),
}
_BUILTINS = {
    name: getattr(__import__("builtins"), name)
    for name in ("object", "tuple", "list", "dict", "set", "frozenset", "slice", "complex", "int",
                 "float", "bool", "str", "bytes", "bytearray", "range")
}


def _check_key(key: Any, budget: Budget) -> None:
    """Dict keys and set items are hashed (and compared) by walking every leaf: keep them small."""
    if not isinstance(key, (str, bytes, int, float, bool, type(None))):
        walk(key, budget, _children(budget), max_nodes=_KEY_NODES, what="a dict key or set item")


def _container_items(args: tuple, budget: Budget) -> Any:
    CALL_CHECKS[list](args, budget)  # one container the pickle made, priced as a copy
    return args[0] if args else ()


def _check_set_call(args: tuple, budget: Budget) -> None:  # set(x), frozenset(x): every item is hashed
    for item in _container_items(args, budget):
        _check_key(item, budget)


def _check_dict_call(args: tuple, budget: Budget) -> None:  # dict(mapping) or dict(pairs): keys are hashed
    arg = _container_items(args, budget)
    for item in arg:
        pair = not isinstance(arg, dict) and isinstance(item, (tuple, list)) and item
        _check_key(item[0] if pair else item, budget)


def _check_reconstructor(args: tuple, budget: Budget) -> None:  # copyreg._reconstructor(cls, base, state)
    if len(args) != 3 or not _is_stand_in_class(args[0]) or args[1] is not object:
        raise budget.refuse("copyreg._reconstructor asked for a class that is not a chumpy or sparse stand-in")


def _no_cost(args: tuple, budget: Budget) -> None:
    """Stand-ins ignore their arguments: creating one allocates nothing."""


# Every callable find_class hands out, with the checker that prices a call before it runs.
_CHECKS: dict[Any, Callable[[tuple, Budget], None]] = {
    **CALL_CHECKS, set: _check_set_call, frozenset: _check_set_call, dict: _check_dict_call,
    copyreg._reconstructor: _check_reconstructor,
}


def _checker(func: Any) -> Callable[[tuple, Budget], None] | None:
    if _is_stand_in_class(func):
        return _no_cost
    if isinstance(func, type) and issubclass(func, np.dtype):  # numpy>=1.25 DType classes
        return _CHECKS[np.dtype]
    try:
        return _CHECKS.get(func)
    except TypeError:  # unhashable: not a callable find_class gave out
        return None


# ============================================================================ the unpickler
def _counted(op: Callable) -> Callable:
    """Run one opcode, then check the stack + memo size and the MARK depth."""
    def run(self: "_BoundedUnpickler") -> None:
        op(self)
        lim = self.budget.limits
        if len(self.stack) + len(self.memo) + self._below > lim.max_objects:
            raise self.budget.refuse(f"the pickle holds more than {lim.max_objects:,} objects at once")
        if len(self.metastack) > lim.max_depth:
            raise self.budget.refuse(f"the pickle nests deeper than {lim.max_depth} levels")
    return run


class _BoundedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]  # the pure-Python one
    def __init__(self, data: bytes, budget: Budget) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.budget = budget
        self._below = 0  # entries held on the stacks saved by MARK
        self._stand_ins: dict[tuple[str, str], type] = {}  # one class per name (a class costs ~1 KB)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if module in _NUMPY_MODULES and _NUMPY_NAMES.get(name) is not None:
            return _NUMPY_NAMES[name]
        if module.startswith("numpy") and name.endswith("DType") and module.endswith("dtypes"):
            cls = getattr(np.dtypes, name, None)  # numpy>=1.25 pickles dtypes by class
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor  # only instantiates stand-ins (_check_reconstructor)
        if module == "_codecs" and name == "encode":
            return codecs.encode  # Python-3 pickles of bytes use it (latin1 only: _check_encode)
        if module == "chumpy" or module.startswith("chumpy."):
            return self._stand_in(module, name, lambda: _chumpy_class(module, name))
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return self._stand_in(module, name, lambda: _sparse_class(name[:3]))
        raise FlameFileError(
            f"{self.budget.source}: refusing to unpickle global '{module}.{name}': FLAME files only contain numpy "
            "arrays, scipy sparse matrices and chumpy arrays. This file may be malicious or is not a FLAME "
            "model; nothing in it was executed."
        )

    def _stand_in(self, module: str, name: str, make: Callable[[], type]) -> type:
        """The stand-in class for one pickled class name, made once; a FLAME file names one to three."""
        key = (module, name)
        if key not in self._stand_ins:
            if len(self._stand_ins) >= 64:
                raise self.budget.refuse("the pickle names more than 64 chumpy / sparse classes")
            self._stand_ins[key] = make()
        return self._stand_ins[key]

    def load_bytearray8(self) -> None:
        """Protocol 5's BYTEARRAY8: the stock loader allocates the length the file *claims* before
        reading; read what the file holds instead."""
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("pickle data was truncated (BYTEARRAY8)")
        self.budget.charge(n, "a bytearray")
        self.append(bytearray(data))

    def _call(self, func: Any, args: tuple) -> Any:
        check = _checker(func)
        if check is None:
            raise self.budget.refuse(f"the pickle calls a {type(func).__name__} that is not allowed")
        check(tuple(args), self.budget)
        return func(*args)

    # ---------------------------------------------------------------- opcodes that call or fill
    def load_reduce(self) -> None:
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("REDUCE arguments are not a tuple")
        self.stack[-1] = self._call(self.stack[-1], args)

    def _instantiate(self, klass: Any, args: list) -> None:  # OBJ / INST
        self.append(self._call(klass, tuple(args)))

    def _new(self, cls: Any, args: Any) -> None:
        """NEWOBJ / NEWOBJ_EX: only the stand-ins and ``object`` (``bytearray.__new__`` would allocate)."""
        if not (_is_stand_in_class(cls) or cls is object) or not isinstance(args, tuple):
            raise self.budget.refuse(f"NEWOBJ of {getattr(cls, '__name__', type(cls).__name__)}")
        self.append(cls.__new__(cls))  # the stand-ins ignore their arguments; their state comes by BUILD

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self._new(self.stack.pop(), args)

    def load_newobj_ex(self) -> None:
        self.stack.pop()  # kwargs: the stand-ins and object take none
        args = self.stack.pop()
        self._new(self.stack.pop(), args)

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if type(inst) is np.ndarray:  # ndarray.__setstate__((version,) shape, dtype, fortran, data)
            fields = state if isinstance(state, tuple) else ()
            fields = fields[1:] if len(fields) == 5 else fields
            if len(fields) != 4:
                raise self.budget.refuse("an array state of unexpected form")
            charge_array(fields[0], fields[1], self.budget)
        elif isinstance(inst, np.dtype):  # (version, byte order, subarray, names, fields, size, align, flags)
            # A subarray or fields in the state can contradict the size numpy then trusts (a 'V8'
            # dtype whose subarray is 10**4 x 10**4 makes ndarray((1,), it) allocate 0.8 GB).
            if not (isinstance(state, tuple) and len(state) in (8, 9) and state[2] is None and state[3] is None
                    and state[4] is None):
                raise self.budget.refuse("a dtype state with sub-arrays or fields (FLAME arrays are plain numbers)")
        elif not isinstance(inst, (np.generic, *_STAND_INS)):
            raise self.budget.refuse(f"BUILD on a {type(inst).__name__}")
        super().load_build()

    def _fill(self, kind: type, items: list | None = None) -> None:
        target = self.stack[-1]
        if type(target) is not kind:
            raise self.budget.refuse(f"the pickle adds items to a {type(target).__name__}")
        if items is not None:
            self.budget.count(len(target) + len(items), f"a {kind.__name__}")

    def load_append(self) -> None:
        value = self.stack.pop()
        self._fill(list, [value])
        self.stack[-1].append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._fill(list, items)
        self.stack[-1].extend(items)

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._fill(dict, [key])
        _check_key(key, self.budget)
        self.stack[-1][key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._fill(dict, items[::2])
        for i in range(0, len(items), 2):
            _check_key(items[i], self.budget)
            self.stack[-1][items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._fill(set, items)
        for item in items:
            _check_key(item, self.budget)
        self.stack[-1].update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            _check_key(item, self.budget)
        self.append(frozenset(items))

    def load_mark(self) -> None:
        super().load_mark()
        self._below += len(self.metastack[-1])

    def pop_mark(self) -> list:
        items = super().pop_mark()
        self._below -= len(self.stack)
        return items


def _dispatch_table() -> dict[int, Callable]:
    """The pure-Python unpickler's opcode table with our overrides, every entry counted (``_counted``)."""
    cls = _BoundedUnpickler
    table = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    for op, fn in ((pickle.REDUCE, cls.load_reduce), (pickle.NEWOBJ, cls.load_newobj),
                   (pickle.NEWOBJ_EX, cls.load_newobj_ex), (pickle.BUILD, cls.load_build),
                   (pickle.APPEND, cls.load_append), (pickle.APPENDS, cls.load_appends),
                   (pickle.SETITEM, cls.load_setitem), (pickle.SETITEMS, cls.load_setitems),
                   (pickle.ADDITEMS, cls.load_additems), (pickle.FROZENSET, cls.load_frozenset),
                   (pickle.MARK, cls.load_mark), (pickle.BYTEARRAY8, cls.load_bytearray8)):
        table[op[0]] = fn
    return {k: _counted(f) for k, f in table.items()}


_BoundedUnpickler.dispatch = _dispatch_table()


# ============================================================================ the loaded tree
def _children(budget: Budget) -> Callable[[Any], Any]:
    """What repr / np.asarray / hashing would visit below an object; a sparse stand-in's dense size
    is charged as it is reached (``to_numpy`` will make it)."""
    def kids(obj: Any) -> Any:
        if isinstance(obj, (list, tuple, set, frozenset)):
            return obj
        if isinstance(obj, dict):
            return [*obj.keys(), *obj.values()]
        if isinstance(obj, SparseStandIn):
            shape = _sparse_shape(obj)
            if shape is not None:
                charge_array(shape, "f8", budget)
            return (obj.state,)
        if isinstance(obj, ChumpyStandIn):
            return (obj.state,)
        if isinstance(obj, np.ndarray) and obj.dtype == object:
            return obj.reshape(-1).tolist()
        return ()
    return kids


def safe_load_pickle(data: bytes, source: str = "the pickle", limits: PickleLimits | None = None) -> Any:
    """Unpickle ``data`` through the allowlist, within ``limits`` (default: ``PickleLimits.for_size``).

    Raises FlameFileError for forbidden globals, for anything that would allocate past the limits,
    and for truncated or corrupt data. ``source`` (the file's path) starts the messages.
    """
    source = str(source)
    budget = Budget(limits or PickleLimits.for_size(len(data)), source)
    try:
        obj = _BoundedUnpickler(data, budget).load()
        walk(obj, budget, _children(budget), budget.limits.max_nodes)
        return obj
    except FlameFileError:
        raise
    except RecursionError:
        raise budget.refuse("the pickle nests too deep") from None
    except MemoryError:
        raise budget.refuse("the pickle asked for more memory than this machine has") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OverflowError, struct.error) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise FlameFileError(
            f"{source}: could not read the pickle ({type(exc).__name__}: {first}); the file is truncated or "
            "corrupt. Download the FLAME model again."
        ) from exc


# ============================================================================ to numpy
def _sparse_shape(obj: SparseStandIn) -> tuple | None:
    st = obj.state
    if not isinstance(st, dict):
        return None
    shape = st.get("_shape", st.get("shape", ()))
    return shape if isinstance(shape, (tuple, list)) else None


def _sparse_to_dense(obj: SparseStandIn) -> np.ndarray:
    st = obj.state
    if not isinstance(st, dict):
        raise FlameFileError("sparse matrix in the FLAME file has no readable state")
    raw_shape = _sparse_shape(obj) or ()
    shape = tuple(int(s) for s in raw_shape)
    if len(shape) != 2 or min(shape) < 0:
        raise FlameFileError(f"sparse matrix has invalid shape {shape!r}")
    if shape[0] * shape[1] * 8 > MAX_ARRAY_BYTES:
        raise FlameFileError(f"refused, a sparse matrix of shape {shape} would allocate "
                             f"{fmt_bytes(shape[0] * shape[1] * 8)} once dense; not a FLAME file?")
    dense = np.zeros(shape, dtype=np.float64)
    data = np.asarray(st.get("data"), dtype=np.float64)
    fmt = obj.sparse_format
    if fmt == "coo":
        row, col = np.asarray(st["row"]), np.asarray(st["col"])
        np.add.at(dense, (row, col), data)
        return dense
    indices = np.asarray(st["indices"], dtype=np.int64)
    indptr = np.asarray(st["indptr"], dtype=np.int64)
    n_outer = shape[1] if fmt == "csc" else shape[0]
    if indptr.shape != (n_outer + 1,) or indptr[-1] != len(data) or len(indices) != len(data):
        raise FlameFileError("sparse matrix in the FLAME file is inconsistent (corrupt file?)")
    outer = np.repeat(np.arange(n_outer), np.diff(indptr))
    if len(indices) and (indices.min() < 0 or indices.max() >= (shape[0] if fmt == "csc" else shape[1])):
        raise FlameFileError("sparse matrix indices out of range (corrupt file?)")
    if fmt == "csc":
        np.add.at(dense, (indices, outer), data)
    else:
        np.add.at(dense, (outer, indices), data)
    return dense


def to_numpy(value: Any, key: str) -> np.ndarray:
    """Turn one unpickled entry (ndarray, chumpy stand-in, sparse stand-in, list) into an ndarray."""
    if isinstance(value, ChumpyStandIn):
        state = value.state
        if isinstance(state, dict):
            for field in ("x", "a", "r"):
                if field in state and not isinstance(state[field], ChumpyStandIn):
                    return to_numpy(state[field], key)
        raise FlameFileError(
            f"'{key}' is a chumpy expression ({value.chumpy_class}) rather than a plain chumpy "
            "array; convert the file with chumpy installed, or use an official FLAME release"
        )
    if isinstance(value, SparseStandIn):
        return _sparse_to_dense(value)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - defensive
        raise FlameFileError(f"'{key}' is not an array ({type(value).__name__})") from exc
    if arr.dtype == object:
        raise FlameFileError(f"'{key}' is not a numeric array ({type(value).__name__})")
    return arr
