"""Restricted unpickling of FLAME model files.

Official FLAME pickles (2020, 2023, 2023 Open) were written by Python 2 with ``chumpy`` installed:
some arrays are chumpy ``Ch`` objects and ``J_regressor`` is a ``scipy.sparse`` matrix. chumpy
cannot be installed on current Python/numpy, and a plain ``pickle.load`` of a downloaded file runs
whatever code the file names. So we unpickle through an allowlist:

* numpy's array/dtype/scalar reconstructors and a few inert builtins are allowed as they are;
* any ``chumpy.*`` class becomes :class:`ChumpyStandIn`, which only records its state;
* ``scipy.sparse`` matrix classes become :class:`SparseStandIn`, which only records its state
  (no scipy needed), and :func:`to_numpy` densifies it with plain numpy;
* every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) is refused with
  :class:`~dynavatar.errors.FlameFileError` naming it, before anything is called.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

import numpy as np

from ..errors import FlameFileError

__all__ = ["ChumpyStandIn", "SparseStandIn", "safe_load_pickle", "to_numpy"]


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


def _chumpy_class(module: str, name: str) -> type:
    return type(name, (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})


def _sparse_class(fmt: str) -> type:
    return type(f"{fmt}_matrix_standin", (SparseStandIn,), {"sparse_format": fmt})


_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric"}
def _numpy_core(sub: str) -> Any:
    """numpy>=2 moved ``numpy.core`` to ``numpy._core``; pickles name either."""
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{prefix}.{sub}")
        except ImportError:
            continue
    raise ImportError(sub)  # pragma: no cover


_multiarray = _numpy_core("multiarray")
_NUMPY_NAMES = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "ndarray": np.ndarray,
    "dtype": np.dtype,
    "_frombuffer": getattr(_numpy_core("numeric"), "_frombuffer", None),
}
_BUILTINS = {
    name: getattr(__import__("builtins"), name)
    for name in ("object", "tuple", "list", "dict", "set", "frozenset", "slice", "complex", "int",
                 "float", "bool", "str", "bytes", "bytearray", "range")
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if module in _NUMPY_MODULES and _NUMPY_NAMES.get(name) is not None:
            return _NUMPY_NAMES[name]
        if module.startswith("numpy") and name.endswith("DType") and module.endswith("dtypes"):
            return getattr(np.dtypes, name)  # numpy>=1.25 pickles dtypes by class
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor  # only instantiates classes that passed this check
        if module == "_codecs" and name == "encode":
            import codecs

            return codecs.encode  # Python-3 pickles of bytes use it; encoding text is inert
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_class(module, name)
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return _sparse_class(name[:3])
        raise FlameFileError(
            f"refusing to unpickle global '{module}.{name}': FLAME files only contain numpy arrays, "
            "scipy sparse matrices and chumpy arrays. This file may be malicious or is not a FLAME "
            "model; nothing in it was executed."
        )


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle ``data`` through the allowlist. Raises FlameFileError for anything else."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except FlameFileError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise FlameFileError(
            f"could not read the pickle ({type(exc).__name__}: {exc}); the file is truncated or "
            "corrupt. Download the FLAME model again."
        ) from exc


def _sparse_to_dense(obj: SparseStandIn) -> np.ndarray:
    st = obj.state
    if not isinstance(st, dict):
        raise FlameFileError("sparse matrix in the FLAME file has no readable state")
    shape = tuple(int(s) for s in st.get("_shape", st.get("shape", ())))
    if len(shape) != 2:
        raise FlameFileError(f"sparse matrix has invalid shape {shape!r}")
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
                    return np.asarray(state[field])
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
