"""The container on real files: header, payload placement, index, lazy reading, writing, limits."""

from __future__ import annotations

import gc
import io
import os
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dcformat
from dcformat import EncodeError, EncodeOptions, FormatError, LimitError, QuantizedTensor
from dcformat.format.structs import Header, TensorEntry, entry_size
from fuzz.dcfbuild import CODER, DT, ENC, MAGIC, Ent, align, build_file, crc32, stream
from tests.support.strategies import (
    assert_bit_exact,
    bitpack_stream,
    few,
    parse_file,
    quant_payload,
    quantized_cases,
    raw_arrays,
    raw_ent,
    ref_fillers,
    ref_pack,
    ref_width,
    tensor_names,
    zstd_frame,
)

PRODUCER = f"dcformat {dcformat.__version__}"


def sample_tensors():
    rng = np.random.default_rng(3)
    w = np.where(rng.random((30, 20)) < 0.25, rng.normal(size=(30, 20)), 0).astype(np.float32)
    return {
        "fc1.weight": dcformat.quantize(w, bits=4),
        "fc1.bias": rng.normal(size=20).astype(np.float32),
        "Embed": np.arange(100, dtype=np.int16).reshape(10, 10),
        "a": np.zeros((0, 4), dtype=np.float64),
        "a.b": np.array(True),
        "zé": np.arange(7, dtype=np.uint8),
    }


def check_layout(blob: bytes) -> None:
    """Every structural rule of spec sections 2-5, computed here from the bytes."""
    head = Header.parse(blob[:40])
    assert blob[:8] == MAGIC == head.magic
    assert (head.version_major, head.version_minor) == (1, 0)
    assert head.flags == 0
    assert head.header_crc32 == crc32(blob[:36])
    assert blob[40:64] == bytes(24)
    index = head.index_offset
    assert index >= 64
    assert len(blob) == index + head.metadata_length + head.directory_length + 4
    meta_end = index + head.metadata_length
    dir_end = meta_end + head.directory_length
    assert blob[dir_end:] == struct.pack("<I", crc32(blob[index:dir_end]))
    p = parse_file(blob)
    assert len(p.entries) == head.tensor_count
    names = [e.name_bytes for e in p.entries]
    assert names == sorted(names) and len(set(names)) == len(names)  # strictly ascending bytes
    end = 64
    for e in sorted(p.entries, key=lambda e: (e.offset, len(e.payload))):
        assert e.offset % 64 == 0
        assert e.offset == align(end)
        assert blob[end : e.offset] == bytes(e.offset - end)  # zero padding
        end = e.offset + len(e.payload)
    assert end == index or (not p.entries and index == 64)
    # the directory fields, parsed with the layout structs
    directory = blob[meta_end:dir_end]
    pos = 0
    for _ in range(head.tensor_count):
        raw = TensorEntry.parse(directory[pos:])
        assert raw.flags == 0
        assert raw.payload_crc32 == crc32(blob[raw.payload_offset : raw.payload_offset + raw.payload_length])
        pos += entry_size(raw.name_length, raw.rank)


def test_header_fields_and_layout():
    tensors = sample_tensors()
    blob = dcformat.save(tensors, metadata={"k": "v"}, options=dcformat.EncodeOptions(dense="raw"))  # raw: the layout is the subject
    check_layout(blob)
    head = Header.parse(blob[:40])
    assert head.tensor_count == len(tensors)
    meta = blob[head.index_offset : head.index_offset + head.metadata_length]
    assert meta == f'{{"dcformat.producer":"{PRODUCER}","k":"v"}}'.encode()
    p = parse_file(blob)
    assert [e.name_bytes for e in p.entries] == [b"Embed", b"a", b"a.b", b"fc1.bias", b"fc1.weight", "zé".encode()]
    by_name = {e.name_bytes: e for e in p.entries}
    assert by_name[b"Embed"].dtype == DT["int16"] and by_name[b"Embed"].shape == (10, 10)
    assert by_name[b"Embed"].payload == np.arange(100, dtype="<i2").tobytes()
    assert by_name[b"a.b"].dtype == DT["bool"] and by_name[b"a.b"].shape == () and by_name[b"a.b"].payload == b"\x01"
    assert by_name[b"a"].payload == b"" and by_name[b"a"].shape == (0, 4)
    assert by_name[b"fc1.weight"].encoding in (ENC["quant_dense"], ENC["quant_sparse"])


@given(st.dictionaries(tensor_names, raw_arrays(max_elements=100), max_size=6), st.sampled_from(["raw", "zstd", "auto"]))
@settings(max_examples=few(30))
def test_layout_rules_hold_for_any_file(tensors, dense):
    check_layout(dcformat.save(tensors, options=EncodeOptions(dense=dense)))


def test_empty_file():
    blob = dcformat.save({})
    check_layout(blob)
    assert Header.parse(blob[:40]).index_offset == 64
    assert dcformat.load(blob) == {}


def test_writer_matches_an_independent_writer():
    """Raw tensors written by the package equal, byte for byte, a file built from the spec here."""
    tensors = {
        "b": np.array([1, -2, 3], dtype=np.int8),
        "a": np.arange(20, dtype=np.float64).reshape(4, 5),
        "c": np.zeros((0,), np.float32),
        "d": np.array([1.5], np.float16),
    }
    metadata = {"x": [1, 2], "é": "ü"}
    expected = build_file([raw_ent(n, tensors[n]) for n in sorted(tensors)], metadata={**metadata, "dcformat.producer": PRODUCER})
    assert dcformat.save(tensors, metadata=metadata, options=dcformat.EncodeOptions(dense="raw")) == expected


@pytest.mark.parametrize("gap_bits", [1, 2, 4, 7, 16])
def test_quant_sparse_payload_matches_reference(gap_bits):
    """A bit-packed quant_sparse payload, rebuilt here from spec 6.3/6.5/7.2."""
    codebook = np.array([0.0, 0.25, -1.5, 3.0, 0.125], dtype=np.float32)
    positions = [2, 3, 9, 40, 41, 200, 599]
    codes = [1, 2, 3, 4, 1, 2, 3]
    q = QuantizedTensor.from_entries((20, 30), codebook, positions, codes)
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout="sparse", gap_bits=gap_bits, coder="bitpack"))
    gaps, fillers = ref_fillers(positions, gap_bits)
    it = iter(codes)
    wire_codes = [0 if f else next(it) for f in fillers]  # the +0.0 entry is code 0
    payload = quant_payload(codebook, [bitpack_stream(wire_codes, 5), bitpack_stream(gaps, 1 << gap_bits)], gap_bits=gap_bits, entry_count=len(gaps))
    entry = parse_file(blob).entries[0]
    assert (entry.encoding, entry.dtype, entry.shape) == (ENC["quant_sparse"], DT["float32"], (20, 30))
    assert entry.payload == payload


def test_quant_sparse_payload_with_prepended_zero():
    codebook = np.array([0.5, -1.0], dtype=np.float16)
    q = QuantizedTensor.from_entries((2, 4), codebook, [1, 7], [0, 1], dtype=np.float16)
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout="sparse", gap_bits=2, coder="bitpack"))
    # positions 1, 7 at b = 2: gaps 1, then distance 5 = one filler (gap 3) + gap 1
    expected_cb = np.array([0.0, 0.5, -1.0], dtype=np.float16)
    payload = quant_payload(expected_cb, [bitpack_stream([1, 0, 2], 3), bitpack_stream([1, 3, 1], 4)], gap_bits=2, entry_count=3)
    assert parse_file(blob).entries[0].payload == payload
    assert_bit_exact(dcformat.load(blob)["w"], np.array([[0, 0.5, 0, 0], [0, 0, 0, -1]], np.float16))


def test_quant_dense_payload_matches_reference():
    codebook = np.array([-1.0, 0.0, 2.5], dtype=np.float32)
    codes = np.array([[0, 1, 2], [2, 2, 1]])
    q = QuantizedTensor.from_codes(codebook, codes)
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout="dense", coder="bitpack"))
    payload = quant_payload(codebook, [stream(CODER["bitpack"], ref_pack(codes.reshape(-1), ref_width(3)))], entry_count=6)
    assert parse_file(blob).entries[0].payload == payload


def test_zstd_payload_is_one_frame_with_content_size():
    import zstandard

    array = np.arange(1000, dtype=np.int32)
    payload = parse_file(dcformat.save({"x": array}, options=EncodeOptions(dense="zstd"))).entries[0].payload
    assert zstandard.get_frame_parameters(payload).content_size == array.nbytes
    assert zstandard.ZstdDecompressor().decompress(payload) == array.tobytes()


def test_independent_files_are_read():
    """Files from the spec-derived builder, including freedoms a writer has (spec 5.4 informative)."""
    a = np.arange(10, dtype=np.float32)
    b = np.array([1, 2, 3], dtype=np.int64)
    empty = np.zeros((3, 0), dtype=np.int8)
    codebook = np.array([0.0, 0.5], np.float32)
    q = Ent(
        "q",
        DT["float32"],
        ENC["quant_sparse"],
        (100,),
        quant_payload(codebook, [bitpack_stream([0, 1], 2), bitpack_stream([15, 0], 16)], gap_bits=4, entry_count=2),
    )
    # payloads in reverse name order; an empty payload sharing its offset with the next payload
    blob = build_file([raw_ent("empty", empty), q, raw_ent("b", b), raw_ent("a", a)])
    out = dcformat.load(blob)
    assert_bit_exact(out["a"], a)
    assert_bit_exact(out["b"], b)
    assert out["empty"].shape == (3, 0)
    expected = np.zeros(100, np.float32)
    expected[16] = 0.5
    assert_bit_exact(out["q"], expected)
    with dcformat.open(blob) as f:
        f.verify()
        assert f.metadata() == {"dcformat.producer": "dcformat 0.1.0"}


def test_unknown_reserved_metadata_keys_are_ignored():
    blob = build_file([raw_ent("a", np.zeros(2))], metadata={"dcformat.future": {"x": 1}, "dcformat.producer": "other 9"})
    assert dcformat.load(blob)["a"].tolist() == [0.0, 0.0]


# -- lazy reading --------------------------------------------------------------------------------


def test_lazy_raw_views_are_read_only_and_mapped(tmp_path):
    path = tmp_path / "m.dcf"
    a = np.arange(64, dtype=np.float32)
    dcformat.save_file({"a": a, "z": np.ones(3)}, path, options=dcformat.EncodeOptions(dense="raw"))
    offset = next(e.offset for e in parse_file(path.read_bytes()).entries if e.name == b"a")
    with dcformat.open(path) as f:
        view = f.get("a")
        assert not view.flags.writeable
        with pytest.raises(ValueError):
            view[0] = 1
        # the view is the file's mapped memory: a write to the file shows through it
        fd = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd, np.float32(-7.0).tobytes(), offset + 4 * 5)
        finally:
            os.close(fd)
        assert view[5] == -7.0
        with pytest.raises(dcformat.ChecksumError):  # and every get checks the payload CRC again
            f.get("a")


def test_load_file_returns_writable_copies(tmp_path):
    path = tmp_path / "m.dcf"
    tensors = {
        "a": np.arange(8, dtype=np.int32),
        "z": np.zeros(500, np.float32),
        "q": dcformat.quantize(np.linspace(-1, 1, 50).astype(np.float32), bits=2),
    }
    dcformat.save_file(tensors, path, overrides={"z": EncodeOptions(dense="zstd")})
    before = path.read_bytes()
    out = dcformat.load_file(path)
    for name, array in out.items():
        assert array.flags.writeable, name
        array[...] = 0
    assert path.read_bytes() == before
    assert dcformat.load_file(path)["a"].tolist() == list(range(8))


def test_get_on_bytes_is_read_only_and_load_is_writable():
    blob = dcformat.save({"a": np.arange(4, dtype=np.uint16)})
    with dcformat.open(blob) as f:
        assert not f.get("a").flags.writeable
    assert dcformat.load(blob)["a"].flags.writeable
    with dcformat.open(bytearray(blob)) as f:
        assert f.get("a").tolist() == [0, 1, 2, 3]
    with dcformat.open(memoryview(blob)) as f:
        assert f.get("a").tolist() == [0, 1, 2, 3]


def test_closing_while_a_view_is_alive(tmp_path):
    path = tmp_path / "m.dcf"
    dcformat.save_file({"a": np.arange(1000, dtype=np.float64)}, path)
    f = dcformat.open(path)
    view = f.get("a")
    f.close()
    f.close()  # idempotent
    assert view[999] == 999.0 and view.sum() == sum(range(1000))
    del view
    gc.collect()
    with dcformat.open(path) as g:
        with g:  # nested use of the same reader is harmless
            pass
    os.remove(path)  # nothing keeps the file open


# -- info -------------------------------------------------------------------------------------------


def test_info_of_a_quantized_tensor():
    codebook = np.array([0.0, 0.25, -1.5, 3.0], dtype=np.float32)
    positions = [2, 3, 9, 40, 41, 200, 599]
    codes = [1, 2, 3, 1, 1, 2, 0]  # the last entry is a stored zero
    q = QuantizedTensor.from_entries((20, 30), codebook, positions, codes)
    for coder in ("bitpack", "huffman", "zstd"):
        blob = dcformat.save({"w": q}, options=EncodeOptions(layout="sparse", gap_bits=3, coder=coder))
        payload = parse_file(blob).entries[0].payload
        n = len(ref_fillers(positions, 3)[0])
        codes_at = 16 + 4 * 4
        codes_len = 9 + struct.unpack_from("<Q", payload, codes_at + 1)[0]
        gaps_len = 9 + struct.unpack_from("<Q", payload, codes_at + codes_len + 1)[0]
        assert codes_at + codes_len + gaps_len == len(payload)
        with dcformat.open(blob) as f:
            info = f.info("w")
        assert info.name == "w" and info.shape == (20, 30) and info.dtype == "float32" and info.encoding == "quant_sparse"
        assert info.stored_bytes == len(payload)
        assert info.decoded_bytes == 600 * 4
        assert info.density == pytest.approx(6 / 600)
        assert info.entry_count == n
        assert info.codebook_size == 4
        assert info.gap_width == 3
        assert info.codes_coder == coder and info.gaps_coder == coder
        assert info.code_bits == pytest.approx(8 * codes_len / n)
        assert info.gap_bits == pytest.approx(8 * gaps_len / n)
        assert info.ratio == pytest.approx(2400 / len(payload))
        assert info.payload_offset == 64
        d = info.as_dict()
        assert d["shape"] == [20, 30] and d["ratio_vs_fp32"] == pytest.approx(info.ratio)


def test_info_of_dense_and_raw_tensors():
    q = QuantizedTensor.from_codes(np.array([0.0, 1.0], np.float32), np.array([[0, 1, 1, 0]]))
    a = np.array([0.0, -0.0, np.nan, 1.0, 0.0, 2.0], dtype=np.float32)
    blob = dcformat.save(
        {"q": q, "a": a, "z": a, "e": np.zeros((0, 2), np.int8)},
        overrides={"q": EncodeOptions(layout="dense", coder="bitpack"), "z": EncodeOptions(dense="zstd")},
    )
    with dcformat.open(blob) as f:
        qi, ai, zi, ei = f.info("q"), f.info("a"), f.info("z"), f.info("e")
    assert qi.encoding == "quant_dense" and qi.gap_bits is None and qi.gap_width is None and qi.gaps_coder is None
    assert qi.entry_count == 4 and qi.density == pytest.approx(0.5) and qi.codes_coder == "bitpack"
    assert qi.code_bits == pytest.approx(8 * (9 + 1) / 4)  # one byte of 4 codes of 1 bit, plus the stream header
    assert ai.encoding == "raw" and ai.density == pytest.approx(3 / 6)  # -0.0 is zero, NaN is not
    assert ai.stored_bytes == 24 and ai.ratio == pytest.approx(1.0) and ai.entry_count is None and ai.code_bits is None
    assert zi.encoding == "zstd" and zi.density == pytest.approx(3 / 6)
    assert ei.density == 0.0 and ei.stored_bytes == 0 and ei.ratio == float("inf")


# -- writing ------------------------------------------------------------------------------------------


def test_save_file_is_atomic(tmp_path):
    path = tmp_path / "m.dcf"
    path.write_bytes(b"old contents")
    size = dcformat.save_file({"a": np.ones(3)}, path)
    assert os.listdir(tmp_path) == ["m.dcf"]
    assert path.stat().st_size == size
    assert dcformat.load_file(path)["a"].tolist() == [1.0, 1.0, 1.0]
    # a failing save leaves the previous file and no temporary behind
    before = path.read_bytes()
    with pytest.raises(EncodeError):
        dcformat.save_file({"a": np.ones(3), "b": np.zeros(2, np.complex64)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.dcf"]
    # and a failing save to a new path leaves nothing
    with pytest.raises(EncodeError):
        dcformat.save_file({"": np.ones(3)}, tmp_path / "new.dcf")
    assert os.listdir(tmp_path) == ["m.dcf"]


def test_writer_streaming_api():
    sink = io.BytesIO()
    writer = dcformat.Writer(sink)
    writer.add("b", np.arange(3, dtype=np.int8))
    writer.add("a", np.ones(2, np.float32), options=EncodeOptions(dense="zstd"))
    with pytest.raises(EncodeError):
        writer.add("a", np.ones(2))  # duplicate
    size = writer.finish({"m": 1})
    blob = sink.getvalue()
    assert size == len(blob)
    check_layout(blob)
    out = dcformat.load(blob)
    assert out["b"].tolist() == [0, 1, 2] and out["a"].tolist() == [1.0, 1.0]
    # payloads are in the order added, the directory in name order
    p = parse_file(blob)
    assert [e.name for e in p.entries] == [b"a", b"b"]
    assert p.entry("b").offset < p.entry("a").offset
    with pytest.raises(EncodeError):
        writer.add("c", np.ones(1))
    with pytest.raises(EncodeError):
        writer.finish()


def test_file_writer_streams_atomically(tmp_path):
    path = tmp_path / "s.dcf"
    path.write_bytes(b"previous")
    with dcformat.writer(path, metadata={"m": 1}) as w:
        w.add("b", np.arange(4, dtype=np.int8))
        w.add("a", QuantizedTensor.from_entries((50,), np.array([2.0], np.float32), [7], [0]))
        assert path.read_bytes() == b"previous"  # nothing replaced until the end
        assert w.bytes_written > 64
    check_layout(path.read_bytes())
    out = dcformat.load_file(path)
    assert out["b"].tolist() == [0, 1, 2, 3] and out["a"][7] == 2.0 and np.count_nonzero(out["a"]) == 1
    with dcformat.open(path) as f:
        assert f.metadata()["m"] == 1
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with dcformat.writer(path) as w:
            w.add("c", np.ones(3))
            raise RuntimeError("interrupted")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.dcf"]
    with pytest.raises(EncodeError):
        with dcformat.writer(path) as w:
            w.add("c", np.ones(3, np.complex64))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["s.dcf"]


@pytest.mark.parametrize(
    "tensors",
    [
        {1: np.ones(1)},
        {b"bytes": np.ones(1)},
        {"": np.ones(1)},
        {"x" * 1025: np.ones(1)},
        {"é" * 513: np.ones(1)},  # 1026 UTF-8 bytes
        {"\ud800": np.ones(1)},
        {"c": np.zeros(2, np.complex64)},
        {"o": np.array([object()])},
        {"s": np.array(["text"])},
        {"t": np.zeros(2, "M8[s]")},
        {"n": None},
        {"r": np.zeros([1] * 33)},
    ],
    ids=[
        "int-name",
        "bytes-name",
        "empty-name",
        "1025-bytes",
        "1026-utf8-bytes",
        "surrogate",
        "complex64",
        "object",
        "str",
        "datetime",
        "none",
        "rank-33",
    ],
)
def test_bad_input_is_an_encode_error(tensors):
    with pytest.raises(EncodeError):
        dcformat.save(tensors)


def test_name_limits_are_inclusive():
    blob = dcformat.save({"x" * 1024: np.ones(1), "y": np.zeros([1] * 32)})
    assert sorted(dcformat.load(blob)) == ["x" * 1024, "y"]


def test_bad_tensors_argument():
    with pytest.raises(EncodeError):
        dcformat.save([("a", np.ones(1))])
    with pytest.raises(EncodeError):
        QuantizedTensor.from_codes(np.array([1.0, 2.0], np.float32), np.array([0, 2]))  # code out of range
    with pytest.raises(EncodeError):
        QuantizedTensor.from_codes(np.array([np.nan], np.float32), np.array([0]))


# -- the expansion limit ----------------------------------------------------------------------------


def test_encoder_stores_an_over_expanding_quantized_tensor_raw():
    """Spec 9.1: an encoder must not write a tensor that breaks the limit; the reference stores it raw.

    (2**21 copies of one value as quant_dense is a 29-byte payload for 8 MiB: over 65536 x (29 + 64).)
    """
    q = QuantizedTensor.from_codes(np.array([0.5], np.float32), np.zeros(1 << 21, dtype=np.uint8))
    blob = dcformat.save({"q": q}, options=dcformat.EncodeOptions(dense="raw"))
    entry = parse_file(blob).entries[0]
    assert entry.encoding == ENC["raw"] and len(entry.payload) == 4 << 21
    assert (dcformat.load(blob)["q"] == 0.5).all()


def test_encoder_fallback_for_a_single_entry_in_a_huge_tensor():
    """One entry at the end of 2**22 elements.

    Forced to sparse, 16-bit gaps, bit packing, the payload (~600 bytes for 16 MiB) breaks the
    limit, so the encoder stores the tensor raw (16 MiB). With the defaults it finds a layout
    that stays within the limit. Either way the file reads back with the default limit.
    (At shape (2**20, 2**12) the same fallback would build a 16 GiB raw payload in memory:
    what spec 9.1 asks for, so not run here.)
    """
    numel = 1 << 22
    q = QuantizedTensor.from_entries((1 << 11, 1 << 11), np.array([0.75], np.float32), [numel - 1], [0])
    forced = dcformat.save({"q": q}, options=EncodeOptions(layout="sparse", gap_bits=16, coder="bitpack", dense="raw"))
    entry = parse_file(forced).entries[0]
    assert entry.encoding == ENC["raw"] and len(entry.payload) == 4 * numel
    for blob in (forced, dcformat.save({"q": q})):
        entry = parse_file(blob).entries[0]
        assert 4 * numel <= 65536 * (len(entry.payload) + 64)  # spec 9.1, checked here
        with dcformat.open(blob) as f:
            out = f.get("q")
            assert out[-1, -1] == 0.75 and np.count_nonzero(out) == 1


def one_value_dense_file(numel: int) -> bytes:
    payload = quant_payload(np.array([0.5], np.float32), [stream(CODER["bitpack"], b"")], entry_count=numel)
    return build_file([Ent("q", DT["float32"], ENC["quant_dense"], (numel,), payload)])


def test_expansion_limit_and_max_expansion():
    small, big = one_value_dense_file(1000), one_value_dense_file(1 << 21)
    assert (dcformat.load(small)["q"] == 0.5).all()
    with dcformat.open(big) as f:
        with pytest.raises(LimitError) as info:
            f.get("q")
        assert "tensors['q']" in str(info.value)
        with pytest.raises(LimitError):
            f.info("q")
        with pytest.raises(LimitError):
            f.verify()
    with pytest.raises(LimitError):
        dcformat.load(big)
    out = dcformat.load(big, max_expansion=1 << 20)
    assert out["q"].shape == (1 << 21,) and (out["q"] == 0.5).all()


HOSTILE = {
    "raw": lambda shape: Ent("h", DT["float32"], ENC["raw"], shape, b""),
    "zstd": lambda shape: Ent("h", DT["float32"], ENC["zstd"], shape, zstd_frame(bytes(64))),
    "quant_dense": lambda shape: Ent(
        "h",
        DT["float32"],
        ENC["quant_dense"],
        shape,
        quant_payload(np.array([0.5], np.float32), [stream(CODER["bitpack"], b"")], entry_count=int(np.prod(shape, dtype=object))),
    ),
    "quant_sparse": lambda shape: Ent(
        "h",
        DT["float64"],
        ENC["quant_sparse"],
        shape,
        quant_payload(
            np.array([0.0], np.float32), [stream(CODER["bitpack"], b""), stream(CODER["bitpack"], b"\xff" * 8)], gap_bits=16, entry_count=4
        ),
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_huge_declared_shape_fails_without_allocating(kind):
    blob = build_file([HOSTILE[kind]((1 << 20, 1 << 12)), raw_ent("ok", np.arange(3, dtype=np.int8))])
    tracemalloc.start()
    try:
        with dcformat.open(blob) as f:  # opening is fine: payloads are only read on demand
            assert f.entry("h").shape == (1 << 20, 1 << 12)
            assert f.get("ok").tolist() == [0, 1, 2]
            with pytest.raises(LimitError) as info:
                f.get("h")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "tensors['h']" in str(info.value)
    assert peak < 4 << 20, f"peak {peak} bytes"


def test_lying_counts_fail_before_allocating():
    """Within the expansion limit, but the streams are far too short for the declared entries."""
    numel = 1 << 20  # 4 MiB of float32 from a payload of a few dozen bytes: inside 65536 x (payload + 64)
    payload = quant_payload(
        np.array([0.0, 1.0], np.float32), [stream(CODER["bitpack"], b"\x01"), stream(CODER["bitpack"], b"\x01")], gap_bits=1, entry_count=numel
    )
    blob = build_file([Ent("h", DT["float32"], ENC["quant_sparse"], (numel,), payload)])
    tracemalloc.start()
    try:
        with dcformat.open(blob) as f:
            with pytest.raises(dcformat.FormatError) as info:
                f.get("h")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "tensors['h'].codes" in str(info.value)
    assert peak < 2 << 20, f"peak {peak} bytes"


def test_newer_minor_version_is_read():
    blob = build_file([raw_ent("a", np.arange(3, dtype=np.int32))], version=(1, 7))
    with dcformat.open(blob) as f:
        assert f.version == (1, 7)
        assert f.get("a").tolist() == [0, 1, 2]


@given(quantized_cases(max_codebook=50, max_elements=300))
@settings(max_examples=few(20))
def test_quantized_files_follow_the_layout_rules(case):
    check_layout(dcformat.save({"q": case.q, "r": np.ones(5)}))


def test_a_truncated_or_extended_file_says_which():
    """The index must end where the file does; the error says whether bytes are missing (a
    short download) or follow it (something appended)."""
    data = dcformat.save({"w": np.arange(100, dtype=np.float32)})
    for blob, said in ((data[:-1], f"the file is truncated, its index says {len(data):,} bytes"), (data + b"\0" * 3, "3 bytes follow the index")):
        with pytest.raises(FormatError, match="header.index_offset") as info:
            dcformat.load(blob)
        assert str(info.value).endswith(said)
