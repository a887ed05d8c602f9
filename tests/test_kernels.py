"""The kernel policy (``DCFORMAT_KERNELS``): compiled when built, numpy as the fallback.

In CI the extension must be built: a fallback there would hide every compiled-path test
behind the numpy kernels, so its absence fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import dcformat
from dcformat import kernels

BUILT = kernels._load()[0] is not None


def test_extension_is_built_where_ci_runs():
    if not BUILT and os.environ.get("CI"):
        pytest.fail(f"dcformat._kernels is not built ({kernels._load()[1]}): CI must test the compiled kernels")
    if not BUILT:
        pytest.skip("dcformat._kernels is not built here (pip install -e . builds it)")
    assert kernels.in_use() == "compiled" or kernels.choice() == "numpy"


@pytest.mark.parametrize("value, expected", [("", "auto"), ("auto", "auto"), ("NUMPY", "numpy"), (" compiled ", "compiled")])
def test_choice_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(kernels.ENV_KERNELS, value)
    assert kernels.choice() == expected


def test_a_bad_choice_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(kernels.ENV_KERNELS, "rust")
    with pytest.raises(dcformat.DCFormatError, match="DCFORMAT_KERNELS must be one of auto, compiled, numpy"):
        kernels.compiled()


def test_numpy_forces_the_reference_kernels(monkeypatch):
    monkeypatch.setenv(kernels.ENV_KERNELS, "numpy")
    assert kernels.compiled() is None and kernels.in_use() == "numpy"


def test_a_fixed_block_keeps_the_choice_it_began_with(monkeypatch):
    """kernels.fixed (a load reads the environment once): inside, compiled() answers as on
    entry whatever the variable says; after it, and in other threads, the variable rules."""
    import threading

    monkeypatch.setenv(kernels.ENV_KERNELS, "numpy")
    with kernels.fixed():
        monkeypatch.setenv(kernels.ENV_KERNELS, "auto")
        assert kernels.compiled() is None
        seen = []
        worker = threading.Thread(target=lambda: seen.append(kernels.compiled()))
        worker.start()
        worker.join()
        assert seen == [kernels._load()[0]]
    assert kernels.compiled() is kernels._load()[0]


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(kernels, "_loaded", (None, "No module named 'dcformat._kernels'"))
    monkeypatch.setattr(kernels, "_warned", False)
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    with pytest.warns(RuntimeWarning, match="compiled kernels unavailable .*decoding with numpy"):
        assert kernels.compiled() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second use does not warn again
        data = dcformat.save({"x": np.arange(5000, dtype=np.float32)})
        assert np.array_equal(dcformat.load(data)["x"], np.arange(5000, dtype=np.float32))


def test_missing_extension_is_an_error_when_compiled_is_required(monkeypatch):
    monkeypatch.setattr(kernels, "_loaded", (None, "No module named 'dcformat._kernels'"))
    monkeypatch.setenv(kernels.ENV_KERNELS, "compiled")
    with pytest.raises(dcformat.DCFormatError, match="DCFORMAT_KERNELS=compiled but dcformat._kernels is not built"):
        kernels.compiled()


needs_extension = pytest.mark.skipif(not BUILT, reason="dcformat._kernels is not built here (pip install -e . builds it)")


@pytest.mark.parametrize("policy", ["auto", "numpy"])
@pytest.mark.parametrize("count, dtype", [(0, np.float32), (7, np.float16), (16_384, np.float32), (700_001, np.float32), (300_000, np.uint16)])
def test_output_arrays_are_zeroed_writable_and_sized(monkeypatch, policy, count, dtype):
    monkeypatch.setenv(kernels.ENV_KERNELS, policy)
    out = kernels.output_array(count, dtype)
    assert out.shape == (count,) and out.dtype == dtype and out.flags.writeable and out.flags.c_contiguous
    assert not out.any()
    out[:] = 3
    assert int(out.sum()) == 3 * count


@needs_extension
@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="own pages are mapped on Linux only")
def test_large_outputs_get_pages_of_their_own_aligned_for_huge_pages(monkeypatch):
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    big = kernels.output_array(3 << 20, np.uint8)  # 3 MiB: one huge page and 1 MiB of small ones
    assert type(big.base).__name__ == "Pages" and big.ctypes.data % (2 << 20) == 0
    small = kernels.output_array(kernels.OWN_PAGES_MIN_BYTES // 4, np.float32)
    assert type(small.base).__name__ == "Pages"
    assert type(kernels.output_array(100, np.float32).base).__name__ != "Pages"  # below the threshold: numpy's


@needs_extension
def test_an_output_outlives_every_other_reference_to_its_pages():
    native = kernels._load()[0]
    view = np.frombuffer(native.output_pages(5_000_003), dtype=np.uint8)  # the pages object lives on only in the view
    view[-1] = 7
    view[:4096] = 1
    del native
    import gc

    gc.collect()
    assert view[-1] == 7 and int(view[:4096].sum()) == 4096 and view.size == 5_000_003 + (-5_000_003 % os.sysconf("SC_PAGESIZE"))


@needs_extension
@pytest.mark.parametrize("size", [0, -1])
def test_output_pages_refuse_a_size_that_is_not_positive(size):
    with pytest.raises(ValueError, match="output_pages needs a positive size"):
        kernels._load()[0].output_pages(size)


def _mapped(address: int) -> bool:
    """Whether this process maps the byte at ``address`` (Linux: /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(part, 16) for part in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


linux_only = pytest.mark.skipif(os.uname().sysname != "Linux", reason="pages are mapped by dcformat on Linux only")


@needs_extension
@linux_only
def test_outputs_taken_from_a_reserve_are_runs_of_its_pages_each_freed_alone(monkeypatch):
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    page = os.sysconf("SC_PAGESIZE")
    sizes = [300_000 * 4, 3 << 20, 100_000 * 2]
    reserve = kernels.output_reserve(sizes + [100])  # the small one needs no pages
    first = kernels.output_array(300_000, np.float32, reserve)
    second = kernels.output_array(3 << 20, np.uint8, reserve)
    third = kernels.output_array(100_000, np.uint16, reserve)
    assert first.ctypes.data % (2 << 20) == 0  # a reserve from 2 MiB up is aligned for huge pages
    assert second.ctypes.data == first.ctypes.data + -(-sizes[0] // page) * page  # run after run
    assert third.ctypes.data == second.ctypes.data + -(-sizes[1] // page) * page
    for out, value in ((first, 1.5), (second, 2), (third, 3)):
        assert not out.any() and out.flags.writeable
        out[:] = value
    assert kernels.output_array(100_000, np.uint16, reserve).ctypes.data not in range(first.ctypes.data, third.ctypes.data + sizes[2])
    del reserve  # what nobody took is unmapped; the runs taken live on in their arrays
    import gc

    gc.collect()
    assert float(first.sum()) == 1.5 * 300_000 and int(second.sum()) == 2 * (3 << 20) and int(third.sum()) == 3 * 100_000
    address = second.ctypes.data
    del second
    gc.collect()
    assert not _mapped(address) and _mapped(first.ctypes.data) and _mapped(third.ctypes.data)


@needs_extension
@linux_only
def test_a_reserve_hands_out_no_more_than_it_holds():
    native = kernels._load()[0]
    page = os.sysconf("SC_PAGESIZE")
    reserve = native.output_reserve([3 * page - 5])  # three pages
    assert reserve.take(page + 1) is not None  # two
    assert reserve.take(page + 1) is None  # two more: too many, nothing taken
    last = reserve.take(page)
    assert last is not None and len(memoryview(last)) == page
    assert reserve.take(1) is None
    for size in (0, -1):
        with pytest.raises(ValueError, match="take needs a positive size"):
            reserve.take(size)
        with pytest.raises(ValueError, match="output_reserve needs positive sizes"):
            native.output_reserve([page, size])
    runs = native.output_reserve([page + 1, 1])  # a run of whole pages for each size: two, then one
    assert runs.take(page + 1) is not None and runs.take(1) is not None and runs.take(1) is None
    assert native.output_reserve([]) is None
    with pytest.raises(TypeError, match="a sequence of sizes"):
        native.output_reserve(page)


def test_no_reserve_without_the_extension_or_without_outputs_that_need_one(monkeypatch):
    monkeypatch.setenv(kernels.ENV_KERNELS, "numpy")
    assert kernels.output_reserve([10 << 20]) is None
    assert kernels.output_array(300_000, np.float32, None).shape == (300_000,)
    monkeypatch.delenv(kernels.ENV_KERNELS)
    assert kernels.output_reserve([100, kernels.OWN_PAGES_MIN_BYTES - 1]) is None


@needs_extension
@linux_only
def test_a_load_decodes_into_one_reserve(monkeypatch, tmp_path):
    """load_file maps the pages of every decoded tensor at once: the quantized and float_split
    tensors lie run after run (raw and small ones are elsewhere), and the values are those
    the numpy kernels give."""
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.standard_normal((300, 400)).astype(np.float32),
        "b": rng.standard_normal(70_000).astype(np.float32),
        "small": rng.standard_normal(10).astype(np.float32),
        "c": rng.standard_normal((200, 300)).astype(np.float32),
    }
    path = tmp_path / "m.dcf"
    with dcformat.FileWriter(path) as writer:
        writer.add("a", dcformat.quantize(tensors["a"], bits=5))
        writer.add("b", tensors["b"])  # float_split, the lossless default for floats
        writer.add("small", tensors["small"])
        writer.add("c", dcformat.quantize(tensors["c"], bits=4))
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    loaded = dcformat.load_file(path, threads=1)
    page = os.sysconf("SC_PAGESIZE")
    runs = sorted((loaded[name].ctypes.data, -(-loaded[name].nbytes // page) * page) for name in ("a", "b", "c"))
    for (start, length), (following, _) in zip(runs, runs[1:]):
        assert following == start + length
    monkeypatch.setenv(kernels.ENV_KERNELS, "numpy")
    reference = dcformat.load_file(path)
    for name, array in loaded.items():
        assert array.flags.writeable and np.array_equal(array, reference[name]), name


@pytest.mark.skipif(kernels._load()[0] is None, reason="dcformat._kernels is not built (test_extension_is_built_where_ci_runs fails in CI instead)")
@pytest.mark.parametrize("switches", [(), ("DCFORMAT_NO_AVX512",), ("DCFORMAT_NO_CLMUL",)], ids=["wide", "clmul", "bytes"])
def test_crc32_is_zlibs(switches):
    """Every length around the 16-, 64- and 256-byte steps and a few large ones, from several
    start values, folded 512 bits at a time where the CPU has VPCLMULQDQ, 128 bits at a time
    (a fresh process told not to use AVX-512), and by the byte table alone (told not to fold)."""
    code = """
import zlib, numpy as np
from dcformat import _kernels
rng = np.random.default_rng(7)
lengths = list(range(0, 600)) + [1000, 4096 + 13, (1 << 20) + 77]
for n in lengths:
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    for start in (0, 1, 0x12345678, 0xFFFFFFFF):
        assert _kernels.crc32(data, start) == zlib.crc32(data, start), (n, start)
    assert _kernels.crc32(memoryview(data)[3:]) == zlib.crc32(data[3:])
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("DCFORMAT_NO_AVX512", "DCFORMAT_NO_CLMUL")}
    env.update({name: "1" for name in switches})
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.skipif(kernels._load()[0] is None, reason="dcformat._kernels is not built (test_extension_is_built_where_ci_runs fails in CI instead)")
def test_vector_loops_follow_the_cpu_and_the_switch():
    """The Huffman decoder's vector loop is chosen at import where the CPU has AVX-512 (F, CD,
    BW, VL), and float_split's vector unpacking where it also has VBMI, unless told otherwise
    (``DCFORMAT_NO_AVX512``, which CI uses to run the compiled property tests over the scalar
    loops as well)."""
    code = "from dcformat import _kernels; print(_kernels.VECTOR_LANES, _kernels.VECTOR_UNPACK)"
    flags = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())
    capable = {"avx512f", "avx512cd", "avx512bw", "avx512vl"} <= flags
    plain = {k: v for k, v in os.environ.items() if k != "DCFORMAT_NO_AVX512"}
    expected_plain = f"{32 if capable else 0} {int(capable and 'avx512vbmi' in flags)}"
    for env, expected in ((plain, expected_plain), ({**plain, "DCFORMAT_NO_AVX512": "1"}, "0 0")):
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert result.stdout.strip() == expected, result.stderr
