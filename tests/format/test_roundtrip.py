"""Round trips: whatever is saved loads back bit for bit, under every encoding option."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dcformat
from dcformat import EncodeError, EncodeOptions, QuantizedTensor
from tests.support.strategies import (
    FLOAT_DTYPES,
    NUMPY_DTYPES,
    assert_bit_exact,
    bits_of,
    few,
    metadata_dicts,
    odd_layout_arrays,
    parse_file,
    quantized_cases,
    raw_arrays,
    tail_case,
    tensor_names,
)

PRODUCER = {"dcformat.producer": f"dcformat {dcformat.__version__}"}
CODERS = [None, "bitpack", "huffman", "zstd"]


def check_quantized_file(blob: bytes, name: str, case) -> None:
    """The file decodes to the case's expected array, and get_quantized agrees with it."""
    expected = case.expected()
    with dcformat.open(blob) as f:
        assert_bit_exact(f.get(name), expected)
        if f.entry(name).encoding not in (3, 4):  # a plain fallback (expansion limit, or sparse forced on an empty tensor)
            with pytest.raises(EncodeError):
                f.get_quantized(name)
            return
        stored = f.get_quantized(name)
    assert stored.shape == case.shape
    assert np.dtype(stored.dtype) == case.dtype
    assert_bit_exact(stored.dequantize(), expected)
    # the stored codebook is the given one, or the given one with a +0.0 prepended for fillers
    given_cb = case.q.codebook
    cb = stored.codebook
    if cb.size == given_cb.size + 1:
        assert cb[0] == 0 and not np.signbit(cb[0])
        cb = cb[1:]
    assert bits_of(cb.astype(given_cb.dtype)) == bits_of(given_cb)
    # every stored entry is either an original entry or a +0.0 filler
    real = np.isin(stored.positions, case.positions)
    assert np.isin(case.positions, stored.positions).all()
    filler_values = stored.codebook.astype(np.float64)[stored.codes[~real]]
    assert (filler_values == 0).all() and not np.signbit(filler_values).any()


# -- plain arrays ----------------------------------------------------------------------------


@given(raw_arrays())
@example(np.array([np.nan, -0.0, np.inf, -np.inf], dtype=np.float32))
@example(np.array(np.float64(-0.0)))
@example(np.zeros((0, 3, 0), dtype=np.int64))
@example(np.array([0x7FF0000000000001, 0xFFF8000000000123], dtype=np.uint64).view(np.float64))
def test_raw_arrays_round_trip_bit_exact(array):
    for dense in ("raw", "zstd", "auto"):
        blob = dcformat.save({"t": array}, options=EncodeOptions(dense=dense))
        out = dcformat.load(blob)["t"]
        assert out.dtype == array.dtype
        assert_bit_exact(out, array)
        assert out.flags.writeable
        encoding = parse_file(blob).entries[0].encoding
        if dense == "raw" or array.size == 0:
            assert encoding == 1
        elif dense == "zstd":
            assert encoding == 2


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
def test_every_dtype_explicitly(dtype):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 256, size=(7, 3) + (np.dtype(dtype).itemsize,), dtype=np.uint8)
    array = bits.view(dtype).reshape(7, 3) if np.dtype(dtype).kind != "b" else bits[..., 0] % 2 == 1
    for dense in ("raw", "zstd"):
        out = dcformat.load(dcformat.save({"x": array}, options=EncodeOptions(dense=dense)))["x"]
        assert out.dtype == array.dtype
        assert_bit_exact(out, array)


@given(odd_layout_arrays())
def test_byte_order_and_strides_are_normalised(array):
    out = dcformat.load(dcformat.save({"t": array}))["t"]
    assert out.shape == array.shape
    assert out.dtype.byteorder in ("=", "|", "<")
    expected = np.array(array, order="C", dtype=array.dtype.newbyteorder("="))
    assert_bit_exact(out, expected)


def test_python_scalars_and_lists():
    out = dcformat.load(dcformat.save({"a": [[1, 2], [3, 4]], "b": np.float32(2.5), "c": True}))
    assert out["a"].tolist() == [[1, 2], [3, 4]] and out["a"].dtype == np.int64
    assert out["b"].shape == () and out["b"] == np.float32(2.5) and out["b"].dtype == np.float32
    assert out["c"].dtype == np.bool_ and bool(out["c"])


# -- quantized tensors -------------------------------------------------------------------------


@pytest.mark.parametrize("coder", CODERS)
@given(case=quantized_cases(), layout=st.sampled_from(["auto", "dense", "sparse"]))
@settings(max_examples=few(40))
def test_quantized_round_trip(coder, case, layout):
    blob = dcformat.save({"w": case.q}, options=EncodeOptions(layout=layout, coder=coder))
    check_quantized_file(blob, "w", case)
    entry = parse_file(blob).entries[0]
    if entry.encoding not in (3, 4):  # the plain fallback only happens when the expansion limit forbids quantized
        return
    if layout == "dense":
        assert entry.encoding == 3
    elif layout == "sparse" and case.numel > 0:
        assert entry.encoding == 4
    with dcformat.open(blob) as f:
        info = f.info("w")
    if coder is not None:
        assert info.codes_coder == coder
        assert info.gaps_coder == (coder if entry.encoding == 4 else None)


@pytest.mark.parametrize("gap_bits", range(1, 17))
@given(case=quantized_cases(max_codebook=300), coder=st.sampled_from(CODERS))
@settings(max_examples=few(12))
def test_quantized_every_gap_width(gap_bits, case, coder):
    blob = dcformat.save({"w": case.q}, options=EncodeOptions(layout="sparse", gap_bits=gap_bits, coder=coder))
    check_quantized_file(blob, "w", case)
    if case.numel:
        with dcformat.open(blob) as f:
            assert f.info("w").gap_width == gap_bits
            assert f.info("w").encoding == "quant_sparse"


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("layout", ["auto", "dense", "sparse"])
def test_codebook_of_65536_entries(coder, layout):
    rng = np.random.default_rng(65536)
    codebook = rng.standard_normal(65536).astype(np.float32)
    codebook[123] = 0.0
    positions = np.sort(rng.choice(5000, size=300, replace=False))
    codes = rng.integers(0, 65536, size=300)
    codes[:2] = [0, 65535]
    q = QuantizedTensor.from_entries((50, 100), codebook, positions, codes)
    expected = np.zeros(5000, np.float32)
    expected[positions] = codebook[codes]
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout=layout, coder=coder))
    assert_bit_exact(dcformat.load(blob)["w"], expected.reshape(50, 100))
    with dcformat.open(blob) as f:
        assert f.info("w").codebook_size == 65536


def test_codebook_of_65536_entries_without_zero_needing_fillers():
    """A full codebook has no room for a prepended +0.0: sparse-with-fillers and dense are impossible."""
    codebook = np.arange(1, 65537, dtype=np.float32)
    q = QuantizedTensor.from_entries((100000,), codebook, [0, 99999], [0, 65535])
    expected = np.zeros(100000, np.float32)
    expected[[0, 99999]] = [1.0, 65536.0]
    blob = dcformat.save({"w": q})
    assert_bit_exact(dcformat.load(blob)["w"], expected)


@pytest.mark.parametrize("coder", CODERS)
def test_tail_entry_of_a_large_tensor(coder):
    case = tail_case(1 << 15, dtype=np.float16)
    for layout in ("auto", "dense", "sparse"):
        blob = dcformat.save({"w": case.q}, options=EncodeOptions(layout=layout, coder=coder))
        check_quantized_file(blob, "w", case)


@given(
    st.dictionaries(tensor_names, st.one_of(raw_arrays(max_elements=200), quantized_cases(max_codebook=64, max_elements=200)), max_size=5),
    st.sampled_from(["raw", "zstd", "auto"]),
)
@settings(max_examples=few(20))
def test_mixed_files_round_trip(tensors, dense):
    plain = {name: (v.q if hasattr(v, "q") else v) for name, v in tensors.items()}
    blob = dcformat.save(plain, options=EncodeOptions(dense=dense))
    out = dcformat.load(blob)
    assert sorted(out) == sorted(tensors)
    for name, v in tensors.items():
        assert_bit_exact(out[name], v.expected() if hasattr(v, "q") else v)
    with dcformat.open(blob) as f:
        assert f.keys() == sorted(tensors, key=lambda n: n.encode("utf-8"))
        assert len(f) == len(tensors)
        assert all(name in f for name in tensors)


def test_threaded_decoding_gives_the_same_arrays():
    rng = np.random.default_rng(9)
    w = np.where(rng.random((64, 80)) < 0.3, rng.normal(size=(64, 80)), 0).astype(np.float32)
    tensors = {"q": dcformat.quantize(w, bits=5), "r": rng.normal(size=300), "z": np.zeros(999, np.int32)}
    blob = dcformat.save(tensors, overrides={"z": EncodeOptions(dense="zstd")})
    one = dcformat.load(blob, threads=1)
    for threads in (2, 4):
        many = dcformat.load(blob, threads=threads)
        assert list(many) == list(one)
        for name in one:
            assert_bit_exact(many[name], one[name])
    with dcformat.open(blob) as f:
        assert_bit_exact(f.get("q", threads=3), one["q"])


# -- determinism ------------------------------------------------------------------------------


@given(st.dictionaries(tensor_names, raw_arrays(max_elements=50), min_size=1, max_size=6), st.randoms(use_true_random=False))
@settings(max_examples=few(30))
def test_insertion_order_does_not_change_the_bytes(tensors, random):
    names = list(tensors)
    reordered = names[:]
    random.shuffle(reordered)
    q = QuantizedTensor.from_entries((40,), np.array([0.5, -1.0], np.float32), [3, 30], [0, 1])
    fixed = {"\uffffq": EncodeOptions(layout="sparse", gap_bits=4, coder="huffman")}  # one candidate: quick
    first = dcformat.save({**{n: tensors[n] for n in names}, "\uffffq": q}, metadata={"b": 1, "a": [2]}, overrides=fixed)
    second = dcformat.save({"\uffffq": q, **{n: tensors[n] for n in reordered}}, metadata={"a": [2], "b": 1}, overrides=fixed)
    assert first == second
    assert dcformat.save({n: tensors[n] for n in names}) == dcformat.save({n: tensors[n] for n in names})


# -- files and lazy reading ---------------------------------------------------------------------


def test_save_file_load_file_and_lazy_open(tmp_path):
    rng = np.random.default_rng(5)
    w = np.where(rng.random((40, 30)) < 0.3, rng.normal(size=(40, 30)), 0).astype(np.float32)
    q = dcformat.quantize(w, bits=3)
    tensors = {"fc.weight": q, "fc.bias": np.arange(30, dtype=np.float32), "mask": w != 0}
    path = tmp_path / "m.dcf"
    size = dcformat.save_file(tensors, path, metadata={"epoch": 3})
    assert size == os.path.getsize(path)
    loaded = dcformat.load_file(path)
    assert sorted(loaded) == ["fc.bias", "fc.weight", "mask"]
    assert_bit_exact(loaded["fc.bias"], tensors["fc.bias"])
    assert_bit_exact(loaded["mask"], tensors["mask"])
    codebook = q.codebook.astype(np.float32)
    expected = np.zeros(w.size, np.float32)
    expected[np.flatnonzero(w)] = codebook[q.codes]
    assert_bit_exact(loaded["fc.weight"], expected.reshape(w.shape))
    with dcformat.open(path) as f:  # a str path works too
        assert f.keys() == ["fc.bias", "fc.weight", "mask"]
        assert f.metadata() == {"epoch": 3, **PRODUCER}
        assert_bit_exact(f.get("fc.weight"), expected.reshape(w.shape))
        info = f.info("fc.weight")
        assert info.shape == (40, 30) and info.dtype == "float32" and info.encoding.startswith("quant_")
        with pytest.raises(KeyError):
            f.get("missing")
    with dcformat.open(str(path)) as f:
        assert_bit_exact(f.get("fc.bias"), tensors["fc.bias"])
    assert dcformat.load(path.read_bytes()).keys() == loaded.keys()


# -- metadata -----------------------------------------------------------------------------------


@given(metadata_dicts)
def test_metadata_round_trip(metadata):
    blob = dcformat.save({"x": np.zeros(1)}, metadata=metadata)
    with dcformat.open(blob) as f:
        assert f.metadata() == {**metadata, **PRODUCER}
        f.metadata()["mutated"] = 1  # a copy each time
        assert "mutated" not in f.metadata()


def test_metadata_unicode_and_nesting():
    metadata = {"ключ": "значение", "层": {"深": [1, 2.5, None, True, "☃"]}, "": "", "e": "\u00e9\U0001f600"}
    blob = dcformat.save({}, metadata=metadata)
    with dcformat.open(blob) as f:
        assert f.metadata() == {**metadata, **PRODUCER}
    # stored as canonical UTF-8 JSON, non-ASCII unescaped (spec 4.3)
    assert "значение".encode() in blob and b"\\u" not in parse_file(blob).metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {"dcformat.producer": "me"},
        {"dcformat.anything": 1},
        {1: "x"},
        {None: 1},
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": object()},
        {"a": b"bytes"},
    ],
)
def test_bad_metadata_is_rejected(metadata):
    with pytest.raises(EncodeError):
        dcformat.save({"x": np.zeros(1)}, metadata=metadata)


# (found by this suite as a bug: it used to escape as UnicodeEncodeError)
@pytest.mark.parametrize("metadata", [{"\ud800": 1}, {"a": "\udc80"}])
def test_metadata_with_a_lone_surrogate_is_an_encode_error(metadata):
    with pytest.raises(EncodeError):
        dcformat.save({}, metadata=metadata)


# -- the encoder's choices ------------------------------------------------------------------


def choice_cases():
    rng = np.random.default_rng(7)
    n = 1500  # < 2048 symbols: one Huffman lane, so the encoder's size estimates are exact
    w = np.where(rng.random(n) < 0.15, rng.laplace(size=n), 0).astype(np.float32)
    yield "random", dcformat.quantize(w, bits=4)
    yield "dense", dcformat.quantize(rng.normal(size=(30, 40)).astype(np.float32), bits=3)
    yield "clustered", QuantizedTensor.from_entries((n,), np.array([1.0, 2.0], np.float32), np.arange(500, 600), rng.integers(0, 2, 100))
    yield "tail", tail_case(n).q
    yield "periodic", QuantizedTensor.from_entries((n,), np.array([0.5, 1.0, 2.0], np.float32), np.arange(0, n, 3), np.arange(n // 3) % 3)


FORCED = [
    (coder, layout, gap_bits)
    for coder in ("bitpack", "huffman", "zstd", None)
    for layout in ("dense", "sparse")
    for gap_bits in (range(1, 17) if layout == "sparse" else [None])
]


def sizes(q):
    auto = len(dcformat.save({"w": q}))
    forced = {key: len(dcformat.save({"w": q}, options=EncodeOptions(coder=key[0], layout=key[1], gap_bits=key[2]))) for key in FORCED}
    return auto, forced


def test_auto_is_never_larger_than_any_forced_choice():
    """Small tensors have every layout encoded in full with every coder: the default choice is exact."""
    for name, q in choice_cases():
        auto, forced = sizes(q)
        worse = {k: v for k, v in forced.items() if v < auto}
        assert not worse, f"{name}: auto gave {auto} bytes, these forced choices less: {worse}"


@given(quantized_cases(max_codebook=64, max_elements=800), st.lists(st.sampled_from(FORCED), min_size=1, max_size=4, unique=True))
@settings(max_examples=few(25))
def test_auto_is_never_larger_than_forced_choices_property(case, forced):
    if case.numel == 0:  # forced sparse falls back to a 0-byte raw payload there, auto stores quant_dense
        return
    auto = len(dcformat.save({"w": case.q}))
    for coder, layout, gap_bits in forced:
        size = len(dcformat.save({"w": case.q}, options=EncodeOptions(coder=coder, layout=layout, gap_bits=gap_bits)))
        assert auto <= size, (coder, layout, gap_bits, auto, size)


def test_dense_auto_picks_zstd_only_when_smaller():
    compressible = np.zeros(4096, dtype=np.float32)
    noise = np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8)
    for array, encoding in ((compressible, 2), (noise, 1)):
        blob = dcformat.save({"x": array}, options=EncodeOptions(dense="auto"))
        e = parse_file(blob).entries[0]
        assert e.encoding == encoding
        assert len(e.payload) <= array.nbytes
    # forced zstd is zstd even when it is larger
    assert parse_file(dcformat.save({"x": noise}, options=EncodeOptions(dense="zstd"))).entries[0].encoding == 2


def test_overrides_apply_per_tensor():
    a = np.zeros(1000, dtype=np.float32)
    blob = dcformat.save({"a": a, "b": a}, options=EncodeOptions(dense="raw"), overrides={"b": EncodeOptions(dense="zstd")})
    encodings = {e.name: e.encoding for e in parse_file(blob).entries}
    assert encodings == {b"a": 1, b"b": 2}
    with pytest.raises(EncodeError):
        dcformat.save({"a": a}, overrides={"zzz": EncodeOptions()})


@pytest.mark.parametrize(
    "kwargs",
    [dict(layout="diagonal"), dict(gap_bits=0), dict(gap_bits=17), dict(gap_bits=True), dict(gap_bits=4.0), dict(coder="lz4"), dict(dense="gzip")],
)
def test_bad_options(kwargs):
    with pytest.raises(EncodeError):
        EncodeOptions(**kwargs)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_quantized_dtypes(dtype):
    cb = np.array([0.0, 0.5, -2.0, 0.125], dtype=np.float32)
    codes = np.array([[1, 2, 0], [3, 3, 1]])
    q = QuantizedTensor.from_codes(cb, codes, dtype=dtype)
    out = dcformat.load(dcformat.save({"q": q}))["q"]
    assert out.dtype == np.dtype(dtype)
    assert_bit_exact(out, cb.astype(dtype)[codes])
