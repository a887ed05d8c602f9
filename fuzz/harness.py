#!/usr/bin/env python3
"""Fuzz harness for dcformat's decoder.

``check_input(data)`` is a plain function (the replay tests call it): it opens the bytes,
lists keys, reads the metadata, calls ``info``, ``get`` and ``get_quantized`` on every
tensor, ``verify`` and ``load`` (on two threads: the page reserve and the decoding workers),
and swallows only :class:`dcformat.DCFormatError`. Anything else
(an ``IndexError``, ``ValueError``, ``MemoryError``, a failed consistency check) escapes
and is a finding. Beyond "no crash" it checks that what it decodes is consistent:
shapes and dtypes agree with ``info``, a quantized tensor dequantizes to what ``get``
returns, ``verify`` passes only when every tensor decoded, and the compiled kernels (when in
use) agree with the numpy kernels byte for byte, or fail with the same message.

``python fuzz/harness.py [libFuzzer flags] CORPUS_DIR...`` runs it under atheris, with a
custom mutator that re-fixes the CRCs of half of the mutants (otherwise almost every
mutant stops at a checksum).
"""

from __future__ import annotations

import os
import random
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:  # atheris is optional: the replay tests need only check_input
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

if atheris is not None and __name__ == "__main__":
    # Third-party modules first, uninstrumented: coverage feedback then comes from dcformat.
    import concurrent.futures  # noqa: F401
    import json  # noqa: F401
    import statistics  # noqa: F401

    import construct  # noqa: F401
    import ml_dtypes  # noqa: F401
    import numpy  # noqa: F401
    import zstandard  # noqa: F401

    with atheris.instrument_imports():
        import dcformat
    from fuzz import dcfbuild
else:
    import dcformat
    from fuzz import dcfbuild

import numpy as np  # noqa: E402 - after the instrumented imports above, on purpose

QUANTIZED = ("quant_dense", "quant_sparse")
#: Tensors that may legitimately decode to more than this (the spec's expansion limit lets a
#: 60 KB payload declare 4 GB) are only checked up to the expansion check, not decoded: a
#: big but legal allocation is not a finding, and it would trip the fuzzer's RSS limit.
MAX_DECODED_BYTES = 64 << 20


class _TooBigError(Exception):
    """A tensor within the expansion limit but over MAX_DECODED_BYTES."""


def check_input(data: bytes) -> None:
    """Open and decode everything in ``data`` every way; returns normally unless a bug shows.

    A :class:`dcformat.DCFormatError` is the expected answer to bad input and is swallowed;
    any other exception, or a failed consistency check (AssertionError), propagates.
    """
    try:
        f = dcformat.DCFile(data)
    except dcformat.DCFormatError:
        return
    with f:
        names = f.keys()
        assert names == sorted(names, key=lambda n: n.encode("utf-8")), "keys not in byte order"
        assert len(f) == len(names) and all(name in f for name in names)
        metadata = f.metadata()
        assert isinstance(metadata, dict)
        decoded_all, too_big = True, False
        for name in names:
            try:
                decoded_all &= _check_tensor(f, name)
            except _TooBigError:
                too_big = True  # legal but too big to decode here
        if too_big:
            return  # verify() would decode it too
        try:
            checked = f.verify()
        except dcformat.DCFormatError:
            _load_fails(data)
            return
        assert checked == names
        assert decoded_all, "verify() passed although a tensor failed to decode"
        _load_agrees(data, f)


def _load_fails(data: bytes) -> None:
    """``load`` (its page reserve and worker threads) refuses what ``verify`` refused."""
    try:
        dcformat.load(data, threads=2)
    except dcformat.DCFormatError:
        return
    raise AssertionError("load() passed although verify() failed")


def _load_agrees(data: bytes, f) -> None:
    """``load`` on two threads gives every tensor as ``get`` does, bit for bit."""
    loaded = dcformat.load(data, threads=2)
    assert list(loaded) == f.keys(), "load() and keys() name different tensors"
    for name, array in loaded.items():
        expected = f.get(name)
        assert array.dtype == expected.dtype and array.shape == expected.shape, f"{name!r}: load() and get() differ in dtype or shape"
        assert array.tobytes() == expected.tobytes(), f"{name!r}: load() and get() differ"


def _check_tensor(f, name: str) -> bool:
    """Decode one tensor every way; True when it decoded."""
    entry = f.entry(name)
    decoded = f.decoded_bytes(name)
    if decoded > MAX_DECODED_BYTES:
        if decoded > f.max_expansion * (entry.length + 64):
            try:
                f.get(name)
            except dcformat.DCFormatError:
                return False
            raise AssertionError(f"{name!r}: get() decoded past the expansion limit")
        raise _TooBigError(name)
    try:
        info = f.info(name)
    except dcformat.DCFormatError:
        info = None
    try:
        array = f.get(name)
    except dcformat.UnsupportedError:
        return False  # e.g. bfloat16 without ml_dtypes: info() counts on the bits, get() cannot
    except dcformat.DCFormatError as error:
        _numpy_kernels_agree(f, name, str(error))
        assert info is None, f"{name!r}: info() passed but get() failed"
        return False
    _numpy_kernels_agree(f, name, array)
    assert info is not None, f"{name!r}: get() passed but info() failed"
    shape = tuple(entry.shape)
    assert array.shape == shape == tuple(info.shape), f"{name!r}: get() shape {array.shape} != directory {shape}"
    assert dcformat.format.dtypes.name(dcformat.format.dtypes.dtype_id(array.dtype)) == info.dtype, f"{name!r}: dtype differs from info()"
    assert info.decoded_bytes == array.nbytes == decoded
    if info.encoding in QUANTIZED:
        q = f.get_quantized(name)  # get() passed, so this must too
        dense = q.dequantize()
        assert dense.shape == array.shape and dense.dtype == array.dtype
        assert np.array_equal(dense.reshape(-1).view(np.uint8), array.reshape(-1).view(np.uint8)), f"{name!r}: dequantize() != get()"
    return True


def _numpy_kernels_agree(f, name: str, result) -> None:
    """When the compiled kernels decoded, the numpy kernels (the reference) must give the same
    bytes, or fail with the same message."""
    if dcformat.kernels.in_use() != "compiled":
        return
    saved = os.environ.get(dcformat.kernels.ENV_KERNELS)
    os.environ[dcformat.kernels.ENV_KERNELS] = "numpy"
    try:
        reference = f.get(name)
    except dcformat.DCFormatError as error:
        reference = str(error)
    finally:
        if saved is None:
            del os.environ[dcformat.kernels.ENV_KERNELS]
        else:
            os.environ[dcformat.kernels.ENV_KERNELS] = saved
    if isinstance(result, str) or isinstance(reference, str):
        assert result == reference, f"{name!r}: compiled kernels gave {result!r}, numpy {reference!r}"
    else:
        assert result.dtype == reference.dtype and result.tobytes() == reference.tobytes(), f"{name!r}: compiled and numpy kernels differ"


def _fix_crcs(data: bytes) -> bytes:
    try:
        return dcfbuild.fix_crcs(data)
    except Exception:  # the mutator must never fail: an unparsable mutant is left as it is
        return data


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's mutation, then, for half the mutants, valid header, index and payload CRCs."""
    mutated = atheris.Mutate(data, max_size)
    if random.Random(seed).random() < 0.5:
        mutated = _fix_crcs(mutated)[:max_size]
    return mutated


#: Package bugs found and reported but not fixed yet: reproducer in fuzz/crashes/ -> (reason,
#: a predicate recognising the same bug in another input). The replay test marks these
#: reproducers xfail(strict), so fixing the bug fails the test until the entry is removed;
#: the fuzzing entry point skips inputs that hit them, so a long run can look for new ones
#: (set DCFORMAT_FUZZ_REPORT_KNOWN=1 to stop on them too).
KNOWN_OPEN_BUGS: dict = {
    # "reproducer.dcf": ("what goes wrong", predicate(data, exc) -> bool),
}


def known_open_bug(data: bytes, exc: BaseException) -> str | None:
    """The name of the known, still open bug that ``exc`` (raised by check_input) is, if any."""
    for name, (_, matches) in KNOWN_OPEN_BUGS.items():
        try:
            if matches(data, exc):
                return name
        except Exception:  # a predicate must not hide the original exception
            continue
    return None


def test_one_input(data: bytes) -> None:
    try:
        check_input(data)
    except Exception as exc:
        if os.environ.get("DCFORMAT_FUZZ_REPORT_KNOWN") or known_open_bug(data, exc) is None:
            raise


def main(argv: list[str] | None = None) -> int:
    if atheris is None:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 0
    # The compiled kernels are what fuzzing is for (bounds in C); a missing extension must fail,
    # not fall back. check_input compares them with the numpy kernels on every tensor.
    os.environ.setdefault(dcformat.kernels.ENV_KERNELS, "compiled")
    dcformat.kernels.compiled()
    argv = list(sys.argv if argv is None else argv)
    if not any(a.startswith("-max_len") for a in argv):
        argv.append("-max_len=65536")
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
