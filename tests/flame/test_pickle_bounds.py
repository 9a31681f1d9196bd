"""Bounded unpickling: hand-written pickles of a few hundred bytes that would allocate gigabytes
(or run for ever) through allowed globals and plain opcodes are refused quickly, in little memory,
with one line naming the file; real-format files still load."""

from __future__ import annotations

import re
import time
import tracemalloc

import numpy as np
import pytest

from dynavatar.errors import FlameFileError
from dynavatar.flame import read_flame_file
from dynavatar.flame.safe_pickle import PickleLimits, safe_load_pickle
from flame_fixtures import synthetic_flame_arrays, write_chumpy_pickle, write_plain_pickle


# ---------------------------------------------------------------------------- raw opcodes
# (pickletools names: GLOBAL 'c', LONG1 '\x8a', BINUNICODE 'X', SHORT_BINSTRING 'U', BINFLOAT 'G',
# EMPTY_DICT '}', EMPTY_LIST ']', EMPTY_TUPLE ')', MARK '(', TUPLE 't', TUPLE1-3 '\x85\x86\x87',
# REDUCE 'R', BUILD 'b', NEWOBJ '\x81', APPEND 'a', APPENDS 'e', SETITEM 's', SETITEMS 'u',
# DUP '2', POP '0', BINPUT 'q', BINGET 'h', LONG_BINPUT 'r', NEWTRUE/NEWFALSE '\x88'/'\x89', STOP '.')
PROTO2 = b"\x80\x02"


def glob(module: bytes, name: bytes) -> bytes:
    return b"c" + module + b"\n" + name + b"\n"


def long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def text(s: bytes) -> bytes:
    return b"X" + len(s).to_bytes(4, "little") + s


def short_str(s: bytes) -> bytes:
    return b"U" + bytes([len(s)]) + s


def flame_dict(value_ops: bytes) -> bytes:
    """{'v_template': <value>}: looks like the start of a FLAME file."""
    return PROTO2 + b"}" + text(b"v_template") + value_ops + b"s."


RECONSTRUCT = glob(b"numpy.core.multiarray", b"_reconstruct") + glob(b"numpy", b"ndarray")


def dtype(code: bytes) -> bytes:  # numpy.dtype(code, False, True)
    return glob(b"numpy", b"dtype") + short_str(code) + b"\x89\x88\x87R"


def empty_array_then_state(shape_ops: bytes, dtype_ops: bytes, data_ops: bytes) -> bytes:
    """_reconstruct(ndarray, (0,), 'b'), then BUILD with (1, shape, dtype, False, data)."""
    return RECONSTRUCT + b"K\x00\x85" + short_str(b"b") + b"\x87R" + b"(K\x01" + shape_ops + dtype_ops + b"\x89" \
        + data_ops + b"tb"


def shared_list(depth: int) -> bytes:
    """L0 = [1.0, 1.0]; L(i) = [L(i-1), L(i-1)]: 2**(depth+1) floats once expanded, ~10 bytes a level."""
    one = b"G?\xf0\x00\x00\x00\x00\x00\x00"
    ops = b"](" + one + one + b"eq\x00"
    for i in range(1, depth + 1):
        ops += b"0](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i])
    return ops


def shared_tuple(depth: int) -> bytes:
    """T0 = (1, 1); T(i) = (T(i-1), T(i-1)): hashing T(60) walks 2**61 leaves."""
    ops = b"K\x01K\x01\x86q\x00"
    for i in range(1, depth + 1):
        ops += b"0h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"\x86q" + bytes([i])
    return ops


GB8000 = r"would allocate 8,000\.0 GB"
BOMBS = {
    # numpy reconstructors asked for 10**12 elements
    "reconstruct-huge-shape": (flame_dict(RECONSTRUCT + long1(10**12) + b"\x85" + short_str(b"b") + b"\x87R"), GB8000),
    "ndarray-call": (flame_dict(glob(b"numpy", b"ndarray") + long1(10**12) + b"\x85\x85R"), GB8000),
    "setstate-object-array": (flame_dict(empty_array_then_state(long1(10**9) + b"\x85", dtype(b"O8"), b"]")),
                              r"shape \(1000000000,\) object would allocate 8\.0 GB"),
    "setstate-float-array": (flame_dict(empty_array_then_state(long1(10**9) + b"\x85", dtype(b"f8"), short_str(b""))),
                             r"would allocate 8\.0 GB"),
    "huge-dtype-one-element": (flame_dict(RECONSTRUCT + b"K\x01\x85" + short_str(b"(100000,1000)f8") + b"\x87R"),
                               r"would allocate 0\.8 GB"),
    "dtype-state-with-subarray": (flame_dict(glob(b"numpy", b"dtype") + short_str(b"V8") + b"\x89\x88\x87R"
                                             + b"(K\x03" + short_str(b"|") + dtype(b"f8") + b"M\x10'M\x10'\x86\x86"
                                             + b"NNK\x08K\x08K\x00tb"), "a dtype state with sub-arrays"),
    # builtins that allocate their argument
    "bytes-of-int": (flame_dict(glob(b"__builtin__", b"bytes") + long1(10**10) + b"\x85R"), r"bytes\(n\) would allocate 10\.0 GB"),
    "newobj-bytearray": (flame_dict(glob(b"__builtin__", b"bytearray") + long1(10**10) + b"\x85\x81"), "NEWOBJ of bytearray"),
    "str-of-shared-list": (flame_dict(glob(b"__builtin__", b"str") + shared_list(30) + b"\x85R"),
                           "a builtin called on a list"),
    # plain opcodes
    "shared-sublists": (flame_dict(shared_list(24)), "expands to more than"),
    "shared-tuple-dict-key": (PROTO2 + b"}" + shared_tuple(60) + b"Ns.", "dict key or set item expands"),
    "dup-append-self": (flame_dict(b"]" + b"2a" * 400), "list that contains itself"),
    "mark-nesting": (PROTO2 + b"(" * 1000 + b"N.", "nests deeper than 100 levels"),
    "tuple-nesting": (flame_dict(b"K\x01" + b"\x85" * 500), "nests deeper than 100 levels"),
    "setitem-on-array": (flame_dict(RECONSTRUCT + b"K\x00\x85" + short_str(b"b") + b"\x87R" + b"K\x00" + shared_list(24) + b"s"),
                         "adds items to a ndarray"),
    # a sparse matrix that would be 10**6 x 10**6 once dense
    "sparse-dense-size": (flame_dict(glob(b"scipy.sparse.csc", b"csc_matrix") + b")\x81}(" + text(b"_shape")
                                     + long1(10**6) + long1(10**6) + b"\x86ub"), GB8000),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_crafted_pickle_is_refused_fast_and_small(tmp_path, name):
    data, match = BOMBS[name]
    assert len(data) < 1100
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(data)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FlameFileError) as err:
            read_flame_file(path)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert msg.startswith(f"{path}: refused, ") and msg.endswith("not a FLAME file?"), msg
    assert "\n" not in msg
    assert re.search(match, msg), msg
    assert seconds < 1.0, f"{name} took {seconds:.2f} s"
    assert peak < 50e6, f"{name} peaked at {peak / 1e6:.0f} MB"


def test_operator_mul_is_not_a_way_round(tmp_path):
    # b'x' * 10**10 through REDUCE on operator.mul: the global itself is refused.
    path = tmp_path / "mul.pkl"
    path.write_bytes(flame_dict(glob(b"operator", b"mul") + short_str(b"x") + long1(10**10) + b"\x86R"))
    with pytest.raises(FlameFileError, match=r"refusing to unpickle global 'operator\.mul'"):
        read_flame_file(path)


@pytest.mark.parametrize("data,match", [
    # LONG_BINPUT 2**31-1: the C unpickler sizes its memo table by the index; ours is a dict.
    (PROTO2 + b"Nr\xff\xff\xff\x7f.", "expected a dict"),
    # BYTEARRAY8 claiming 8 GB: the stock loader allocates the claimed length before reading.
    (b"\x80\x05\x96" + (8 * 10**9).to_bytes(8, "little") + b"\x00" * 16 + b".", "truncated or corrupt"),
], ids=["memo-index", "bytearray8-claim"])
def test_lying_lengths_and_indices_cost_nothing(tmp_path, data, match):
    path = tmp_path / "lie.pkl"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(FlameFileError, match=match):
            read_flame_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6


def test_stack_and_container_caps():
    dups = PROTO2 + b"]" + b"2" * 2000 + b"."  # 2001 references to one list on the stack
    with pytest.raises(FlameFileError, match="more than 1,000 objects"):
        safe_load_pickle(dups, limits=PickleLimits(max_objects=1000))
    assert safe_load_pickle(dups) == []  # within the default cap: it is only references
    appends = PROTO2 + b"](" + b"K\x01" * 300 + b"e."
    with pytest.raises(FlameFileError, match="a list has 300 elements"):
        safe_load_pickle(appends, limits=PickleLimits(max_elements=200))
    assert safe_load_pickle(appends) == [1] * 300


def test_the_budget_follows_the_file_size(tmp_path):
    assert PickleLimits.for_size(1024).max_bytes == 32 * 1024 + (8 << 20)
    assert PickleLimits.for_size(10**9).max_bytes == 512 << 20  # never more than 512 MiB
    arrays = synthetic_flame_arrays()
    data = write_plain_pickle(tmp_path / "m.pkl", arrays).read_bytes()
    loaded = safe_load_pickle(data)  # a real-format file's arrays are about its own size
    np.testing.assert_array_equal(loaded["shapedirs"], arrays["shapedirs"])
    # Protocol 2 carries each array's bytes as latin-1 text (charged once encoded), then the array.
    with pytest.raises(FlameFileError, match=r"m\.pkl: refused, an array of shape \(64, 3, 400\) float64 would "
                                             r"allocate 0\.6 MB \(1\.2 MB in all; at most 0\.7 MB for this file\)"):
        safe_load_pickle(data, source=str(tmp_path / "m.pkl"), limits=PickleLimits(max_bytes=700_000))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_real_format_pickles_still_load(tmp_path, protocol):
    arrays = synthetic_flame_arrays(n_vertices=16, n_faces=20)
    data = read_flame_file(write_plain_pickle(tmp_path / "p.pkl", arrays, protocol=protocol))
    np.testing.assert_array_equal(data.v_template, arrays["v_template"])
    np.testing.assert_allclose(data.J_regressor, arrays["J_regressor"].toarray())
    ch = read_flame_file(write_chumpy_pickle(tmp_path / "c.pkl", arrays))
    np.testing.assert_array_equal(ch.posedirs, arrays["posedirs"])


def _npz_with_header(path, shape, payload: bytes = b"\0" * 64) -> None:
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("v_template.npy", head.getvalue() + payload)


def test_npz_members_that_claim_more_than_they_hold_are_refused_before_allocating(tmp_path):
    import io
    import zipfile

    _npz_with_header(tmp_path / "liar.npz", (10**10,))
    with zipfile.ZipFile(tmp_path / "zipbomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, np.zeros(40_000_000))  # 320 MB of zeros in a ~300 KB archive
        z.writestr("v_template.npy", buf.getvalue())
    for name, words in (("liar.npz", "claims an array"), ("zipbomb.npz", "unpack to over")):
        tracemalloc.start()
        with pytest.raises(FlameFileError, match=words) as e:
            read_flame_file(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50 * 2**20 and "\n" not in str(e.value) and str(e.value).count("refused") == 1
