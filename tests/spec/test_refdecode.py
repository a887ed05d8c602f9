"""The independent reference decoder (tools/refdecode.py, written from the spec alone) agrees
with the frozen vectors and with the package, tensor for tensor and byte for byte, and the
two accept and reject the same mutated files.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import random
import struct

import numpy as np
import pytest
import zstandard

import dcformat
from fuzz import dcfbuild, harness
from tests.hostile.test_malformed import raw_blocks, window_byte
from tests.support.differential import MANIFEST, VECTORS, package_result, refdecode, reference_result, storage_bytes
from tests.support.optional import needs_ml_dtypes
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT


def test_check_vectors_all_match():
    out = io.StringIO()
    assert refdecode.check_vectors(str(VECTORS), out=out) == 0, out.getvalue()
    assert out.getvalue().count("ok ") == len(MANIFEST)


def test_cli_check_vectors_exit_status(tmp_path):
    """Exit 0 when every vector matches, 1 when one differs (a one-vector folder keeps it fast)."""
    (tmp_path / "example.dcf").write_bytes((VECTORS / "example.dcf").read_bytes())
    manifest = {"example": copy.deepcopy(MANIFEST["example"])}
    (tmp_path / "vectors.json").write_text(json.dumps(manifest), encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert refdecode.main(["--check-vectors", str(tmp_path)]) == 0
    assert "all vectors match" in out.getvalue()
    manifest["example"]["tensors"]["b"]["sha256"] = "0" * 64
    (tmp_path / "vectors.json").write_text(json.dumps(manifest), encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert refdecode.main(["--check-vectors", str(tmp_path)]) == 1
    assert "FAIL example.dcf" in out.getvalue()


def test_cli_prints_every_tensor():
    path = VECTORS / "example.dcf"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert refdecode.main([str(path)]) == 0
    for name, tensor in MANIFEST["example"]["tensors"].items():
        assert f"  {name}  {tensor['dtype']}  {tuple(tensor['shape'])}  {tensor['sha256']}" in out.getvalue()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert refdecode.main(["--json", str(path)]) == 0
    report = json.loads(out.getvalue())
    assert {t["name"]: t["sha256"] for t in report[0]["tensors"]} == {k: v["sha256"] for k, v in MANIFEST["example"]["tensors"].items()}


def test_cli_reports_a_bad_file(tmp_path):
    bad = bytearray((VECTORS / "example.dcf").read_bytes())
    bad[100] ^= 1  # padding inside the payload area: the payload CRC still passes, the padding check does not
    path = tmp_path / "bad.dcf"
    path.write_bytes(bytes(bad))
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
        assert refdecode.main([str(path)]) == 1
    assert "padding" in err.getvalue()


def test_example_tensor_values():
    """The worked example of spec section 12, as values."""
    ref = refdecode.RefFile((VECTORS / "example.dcf").read_bytes())
    assert ref.decode("b").tolist() == [1, -2, 3]
    assert ref.decode("w").tolist() == [0, 0.5, 0, 0, 0, 0, 0, -1]
    assert ref.metadata == {"dcformat.producer": "dcformat 0.1.0"}


def _needs_bfloat16(key: str) -> bool:
    return any(t["dtype"] == "bfloat16" for t in MANIFEST[key]["tensors"].values())


@pytest.mark.parametrize("key", [pytest.param(k, marks=[needs_ml_dtypes] if _needs_bfloat16(k) else []) for k in sorted(MANIFEST)])
def test_package_decodes_the_same_bytes(key):
    path = VECTORS / MANIFEST[key]["file"]
    ref = {t.name: t for t in refdecode.RefFile(path.read_bytes()).verify()}
    loaded = dcformat.load_file(path)
    assert sorted(loaded) == sorted(ref)
    for name, array in loaded.items():
        t = ref[name]
        assert tuple(array.shape) == t.shape, name
        assert dcformat.format.dtypes.name(dcformat.format.dtypes.dtype_id(array.dtype)) == t.dtype, name
        data = storage_bytes(array)
        assert data == t.data, name
        assert hashlib.sha256(data).hexdigest() == MANIFEST[key]["tensors"][name]["sha256"], name


SMALL = [p.read_bytes() for p in sorted((ROOT / "fuzz" / "corpus").iterdir()) if p.stat().st_size <= 4096]


def _mutants(count: int, seed: int):
    rnd = random.Random(seed)
    for _ in range(count):
        data = bytearray(rnd.choice(SMALL))
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randrange(len(data))
            kind = rnd.random()
            if kind < 0.6:
                data[at] ^= 1 << rnd.randrange(8)
            elif kind < 0.85:
                data[at] = rnd.choice([0, 1, 2, 0x7F, 0x80, 0xFF, 64])
            else:
                data[at:at] = bytes([rnd.randrange(256)])
        yield dcfbuild.fix_crcs(bytes(data))


@needs_ml_dtypes  # the corpus holds bfloat16 tensors, which the package returns only through ml_dtypes
def test_reference_and_package_agree_on_mutants():
    """Both accept or both reject each mutant; when both accept, the bytes are equal."""
    disagreements = []
    for data in _mutants(800, seed=2026):
        try:
            package = package_result(data)
        except Exception as exc:
            if harness.known_open_bug(data, exc) is None:
                raise
            continue
        reference = reference_result(data)
        if isinstance(package, str) != isinstance(reference, str) or (isinstance(package, dict) and package != reference):
            disagreements.append((package if isinstance(package, str) else "accepted", reference if isinstance(reference, str) else "accepted"))
    assert not disagreements, disagreements[:5]


def test_huffman_streams_agree_on_mutants():
    """The package's lockstep/pointer-jumping Huffman decoder and the reference's bit-by-bit one
    agree on mutated bodies of many lane layouts (lane_symbols 1 gives one lane per symbol)."""
    from dcformat.codecs import huffman

    rnd = random.Random(5)
    for case in range(300):
        alphabet = rnd.choice([1, 2, 3, 5, 16, 300])
        n = rnd.choice([1, 2, 5, 50, 300, 2100])
        symbols = np.minimum(np.random.default_rng(case).geometric(rnd.choice([0.2, 0.5, 0.9]), size=n) - 1, alphabet - 1)
        body = bytearray(huffman.encode(symbols, alphabet, lane_symbols=rnd.choice([None, 1, 3, 64, 700])))
        for _ in range(rnd.randint(0, 2)):
            at = rnd.randrange(len(body))
            if rnd.random() < 0.7:
                body[at] ^= 1 << rnd.randrange(8)
            else:
                body[at] = rnd.choice([0, 1, 0xFF, 20, 21, 64])
        try:
            package = huffman.decode(bytes(body), n, alphabet).tolist()
        except dcformat.DCFormatError:
            package = None
        try:
            reference = refdecode.decode_huffman(bytes(body), n, alphabet, "stream")
        except refdecode.RefDecodeError:
            reference = None
        assert package == reference, (case, alphabet, n)


def _float_split_header_file(head_bits: int, reserved: bytes, block_elements: int, *, shape=(0,), streams: bytes = b"") -> bytes:
    """A float16 float_split tensor (format 1.1): the 8-byte header of 6.6.2, then ``streams``."""
    payload = struct.pack("<B3sI", head_bits, reserved, block_elements) + streams
    return dcfbuild.build([dcfbuild.T(b"f", 2, 5, shape, payload)], version=(1, 1))


def test_reference_rejects_what_the_spec_forbids():
    """A few hand-built violations, one per rule, that a mutation rarely reaches."""
    T = dcfbuild.T
    bad = {
        "reserved quant field": dcfbuild.build([T(b"w", 1, 3, (1,), dcfbuild.quant(dcfbuild.f32(1.0), 1, 1, dcfbuild.stream(1, b""), reserved=1))]),
        "NaN codebook": dcfbuild.build([T(b"w", 1, 3, (1,), dcfbuild.quant(dcfbuild.f32(float("nan")), 1, 1, dcfbuild.stream(1, b"")))]),
        "float16 inexact": dcfbuild.build([T(b"w", 2, 3, (1,), dcfbuild.quant(dcfbuild.f32(0.1), 1, 1, dcfbuild.stream(1, b"")))]),
        "bfloat16 inexact": dcfbuild.build([T(b"w", 3, 3, (1,), dcfbuild.quant(dcfbuild.f32(1.0 + 2**-10), 1, 1, dcfbuild.stream(1, b"")))]),
        "quant int8": dcfbuild.build([T(b"w", 5, 3, (1,), dcfbuild.quant(dcfbuild.f32(1.0), 1, 1, dcfbuild.stream(1, b"")))]),
        "bool byte 2": dcfbuild.build([T(b"b", 13, 1, (1,), b"\2")]),
        "duplicate key": dcfbuild.build(metadata=b'{"a":1,"a":2}'),
        "NaN metadata": dcfbuild.build(metadata=b'{"a":NaN}'),
        "huffman incomplete": dcfbuild.build(
            [
                T(
                    b"w",
                    1,
                    3,
                    (2,),
                    dcfbuild.quant(dcfbuild.f32(0.0, 1.0, 2.0), 3, 2, dcfbuild.stream(2, dcfbuild.huffman(3, [1, 2, 0], 1, 2, 0, [], 2, b"\0"))),
                )
            ]
        ),
        "single symbol length 2": dcfbuild.build(
            [T(b"w", 1, 3, (2,), dcfbuild.quant(dcfbuild.f32(0.0), 1, 2, dcfbuild.stream(2, dcfbuild.huffman(1, [2], 1, 4, 0, [], 4, b"\0"))))]
        ),
        "unknown dtype in 1.0": dcfbuild.build([T(b"a", 200, 1, (1,), b"\0")]),
        "huge dimension, no element": dcfbuild.build([T(b"a", 1, 1, (2**30, 2**30, 0), b"")]),
        # float_split's header (6.6.2), on an empty float16 tensor: the header is its whole payload
        "float_split reserved byte": _float_split_header_file(2, b"\0\1\0", 4096),
        "float_split head_bits 11": _float_split_header_file(11, bytes(3), 4096),
        "float_split block_elements 4095": _float_split_header_file(2, bytes(3), 4095),
        "float_split 10 blocks in 269 bytes": _float_split_header_file(2, bytes(3), 4096, shape=(10 * 4096,), streams=bytes(269)),
        "float_split header cut": dcfbuild.build([T(b"f", 2, 5, (0,), bytes(7))], version=(1, 1)),
    }
    assert isinstance(reference_result(_float_split_header_file(10, bytes(3), 4096)), dict)  # the same, valid
    assert isinstance(package_result(_float_split_header_file(10, bytes(3), 4096)), dict)
    for label, data in bad.items():
        assert isinstance(reference_result(data), str), label
        assert isinstance(package_result(data), str), label


def test_newer_minor_version_defers_unknown_ids():
    """Spec 5.3: a 1.7 file opens; only the tensors with unknown ids fail."""
    data = (ROOT / "fuzz" / "corpus" / "seed_newer_minor.dcf").read_bytes()
    ref = refdecode.RefFile(data)
    assert ref.decode("c").tolist() == [1, 2, 3]
    for name in ("a", "b"):
        with pytest.raises(refdecode.RefDecodeError):
            ref.decode(name)
    with dcformat.DCFile(data) as f:
        assert f.keys() == ["a", "b", "c"]
        assert f.get("c").tolist() == [1, 2, 3]
        for name in ("a", "b"):
            with pytest.raises(dcformat.UnsupportedError):
                f.get(name)


EMPTY_FRAME_GARBAGE = (ROOT / "fuzz" / "crashes" / "zstd_empty_frame_trailing_garbage_accepted.dcf").read_bytes()


def _empty_zstd_stream_file(trailing: bytes) -> bytes:
    """quant_sparse with no entries, both streams zstd: frames of content size 0, then ``trailing``."""
    frame = dcfbuild.zstd_frame(0) + trailing
    streams = dcfbuild.stream(3, frame) + dcfbuild.stream(3, frame)
    return dcfbuild.build([dcfbuild.T(b"w", 1, 4, (8,), dcfbuild.quant(dcfbuild.f32(0.0), 1, 0, streams, gap_bits=2))])


def test_reference_rejects_bytes_after_an_empty_zstd_frame():
    assert "zstd" in reference_result(EMPTY_FRAME_GARBAGE)
    assert "after the zstd frame" in reference_result(_empty_zstd_stream_file(dcfbuild.zstd_frame(0)))
    assert reference_result(_empty_zstd_stream_file(b"")) == {"w": bytes(32)}
    assert package_result(_empty_zstd_stream_file(b"")) == {"w": bytes(32)}


@pytest.mark.parametrize(
    "data",
    [  # found by the differential test (fixed): the package accepted these
        pytest.param(EMPTY_FRAME_GARBAGE, id="zstd-tensor-0-elements-garbage"),
        pytest.param(_empty_zstd_stream_file(dcfbuild.zstd_frame(0)), id="zstd-streams-n0-second-frame"),
        pytest.param(_empty_zstd_stream_file(b"\x01\x04\x00"), id="zstd-streams-n0-truncated-block"),
    ],
)
def test_package_rejects_bytes_after_an_empty_zstd_frame(data):
    """python-zstandard's one-shot decompress() returns b"" for a frame declaring content size 0
    without reading its blocks; spec 6.2 and 7.4 still require exactly one whole frame."""
    assert isinstance(package_result(data), str)
    assert isinstance(reference_result(data), str)


# ---------------------------------------------------------------- spec 1.1's new MUSTs (4.1, 6.2.1, 7.4)
# For each rule: a file both decoders reject (the reference citing the rule's section) and the
# boundary case both accept. The package reports through dcformat.open / .get / dcformat.load.


def _package_error(data: bytes, *, get: str | None = None) -> dcformat.DCFormatError:
    """The package's error: on open (``get`` None), or only when ``get`` is decoded."""
    if get is None:
        with pytest.raises(dcformat.DCFormatError) as info:
            dcformat.open(data)
    else:
        with dcformat.open(data) as f, pytest.raises(dcformat.DCFormatError) as info:
            f.get(get)
    return info.value


def _reference_error(data: bytes, *, get: str | None = None) -> str:
    with pytest.raises(refdecode.RefDecodeError) as info:
        ref = refdecode.RefFile(data)
        if get is not None:
            ref.decode(get)
    return str(info.value)


DEEP_OBJECTS = lambda levels: b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)  # noqa: E731
DEEP_ARRAYS = lambda levels: b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"  # noqa: E731
LARGEST_INT = 2**1024 - 2**970 - 1  # rounds down to the largest finite binary64; one more rounds to infinity


@pytest.mark.parametrize(
    "metadata, section",
    [
        (DEEP_OBJECTS(65), "§4.1.1"),
        (DEEP_ARRAYS(65), "§4.1.1"),
        (b"[" * 100_000 + b"]" * 100_000, "§4.1.1"),  # found before a recursive parser would recurse
        (b'{"a":1e400}', "§4.1.2"),
        (b'{"a":[-1e400]}', "§4.1.2"),
        (b'{"a":' + str(LARGEST_INT + 1).encode() + b"}", "§4.1.2"),
        (b'{"a":-' + str(LARGEST_INT + 1).encode() + b"}", "§4.1.2"),
        (b'{"a":1' + b"0" * 309 + b"}", "§4.1.2"),  # 310 digits
        (b'{"a":' + b"9" * 5000 + b"}", "§4.1.2"),  # past Python's 4300-digit int() limit too
        (b"\xef\xbb\xbf{}", "§4.1"),  # a byte-order mark
        (b'{"a":"\\ud800"}', "§4.1"),  # an escaped lone surrogate
        (b'{"\\udc00":1}', "§4.1"),
    ],
    ids=[
        "depth-65-objects",
        "depth-65-arrays",
        "depth-100000",
        "1e400",
        "minus-1e400",
        "int-2**1024-2**970",
        "minus-int-2**1024-2**970",
        "int-310-digits",
        "int-5000-digits",
        "bom",
        "lone-surrogate-value",
        "lone-surrogate-key",
    ],
)
def test_both_reject_metadata_breaking_4_1(metadata, section):
    data = dcfbuild.build(metadata=metadata)
    assert section in _reference_error(data)
    assert isinstance(_package_error(data), dcformat.FormatError)


@pytest.mark.parametrize(
    "metadata",
    [
        DEEP_OBJECTS(64),
        DEEP_ARRAYS(64),
        b'{"a":"' + b"[{" * 100 + b'\\"[[[\\\\", "b":"\\\\\\"{{"}',  # brackets in strings, after escapes, do not count
        b'{"a":1e-400, "b":-1e-400}',  # underflows to zero: finite
        b'{"a":' + str(LARGEST_INT).encode() + b', "b":-' + str(LARGEST_INT).encode() + b"}",
        b'{"a":1.7976931348623157e308, "b":1797693134862315807e290}',  # the largest finite binary64, twice
        b'{"a":' + b"0." + b"0" * 400 + b"1}",  # many digits are fine when the value is finite
        b'{"a":"\\ud83d\\ude00"}',  # an escaped surrogate pair is one code point
    ],
    ids=["depth-64-objects", "depth-64-arrays", "brackets-in-strings", "1e-400", "largest-int", "largest-float", "long-fraction", "pair"],
)
def test_both_accept_metadata_at_the_limits_of_4_1(metadata):
    data = dcfbuild.build(metadata=metadata)
    reference = refdecode.RefFile(data).metadata
    with dcformat.open(data) as f:
        assert f.metadata() == reference == json.loads(metadata)


def test_depth_count_matches_the_package_on_random_texts():
    """4.1.1's pre-parse count, on texts of brackets, quotes and escapes (valid JSON or not)."""
    from dcformat.format.strict_json import nesting_depth

    rnd = random.Random(41)
    for _ in range(3000):
        text = "".join(rnd.choice('[]{}""\\\\a') for _ in range(rnd.randint(0, 40)))
        assert refdecode.json_depth(text) == nesting_depth(text.encode(), limit=10**9), text


RAW32 = np.arange(32, dtype="<f4").tobytes()
BIG = 200_000  # more than 128 KiB
RAW_BIG = np.arange(BIG // 4, dtype="<f4").tobytes()


def _frame(content: bytes, blocks: bytes | None = None, **kw) -> bytes:
    return dcfbuild.zstd_frame(len(content), raw_blocks(content, 128) if blocks is None else blocks, **kw)


def _zstd_tensor(frame: bytes, numel: int) -> bytes:
    return dcfbuild.build([dcfbuild.T(b"z", 1, 2, (numel,), frame)])


def _zstd_codes(frame: bytes) -> bytes:
    """quant_dense of 3 entries whose codes stream (7.4) is ``frame``, holding codes 1, 0, 2."""
    payload = dcfbuild.quant(dcfbuild.f32(0.0, 0.5, -1.0), 3, 3, dcfbuild.stream(3, frame))
    return dcfbuild.build([dcfbuild.T(b"q", 1, 3, (3,), payload)])


ZB = dcfbuild.zstd_block
BAD_FRAMES = {  # (frame, elements of the float32 tensor): every one breaks 6.2.1
    "window-2**27+2**24": (_frame(RAW32, single_segment=False, window_byte=window_byte(27, 1)), 32),
    "window-2**28": (_frame(RAW32, single_segment=False, window_byte=window_byte(28)), 32),
    "window-largest": (_frame(RAW32, single_segment=False, window_byte=window_byte(41, 7)), 32),
    "raw-block-over-128KiB": (dcfbuild.zstd_frame(BIG, ZB(0, BIG, RAW_BIG, last=True)), BIG // 4),
    "rle-block-over-128KiB": (dcfbuild.zstd_frame(BIG, ZB(1, BIG, b"\0", last=True)), BIG // 4),
    "raw-block-over-the-window": (
        dcfbuild.zstd_frame(2000, ZB(0, 2000, bytes(2000), last=True), single_segment=False, window_byte=window_byte(10)),
        500,
    ),
    "rle-block-over-the-window": (
        dcfbuild.zstd_frame(2000, ZB(1, 1025, b"\0", last=False) + ZB(0, 975, bytes(975), last=True), single_segment=False, window_byte=0),
        500,
    ),
    "block-over-the-content-single-segment": (dcfbuild.zstd_frame(128, ZB(2, 129, bytes(129), last=True)), 32),
    "reserved-block-type": (dcfbuild.zstd_frame(128, ZB(3, 128, RAW32, last=True)), 32),
    "no-last-block": (dcfbuild.zstd_frame(128, ZB(0, 128, RAW32, last=False)), 32),
    "block-cut-short": (dcfbuild.zstd_frame(128, ZB(0, 128, RAW32, last=True)[:-1]), 32),
    "block-header-cut-short": (dcfbuild.zstd_frame(128, ZB(0, 0, b"", last=False) + b"\x01\x04"), 32),
    "checksum-missing": (dcfbuild.zstd_frame(128, ZB(0, 128, RAW32, last=True), checksum=True), 32),
    "byte-after-the-frame": (_frame(RAW32) + b"\0", 32),
    "block-after-the-last": (_frame(RAW32) + ZB(0, 0, b"", last=True), 32),
    # content size 0: the frame must still end where its blocks say, and regenerate nothing
    "empty-content-raw-block": (dcfbuild.zstd_frame(0, ZB(0, 5, b"abcde", last=True), single_segment=False), 0),
    "empty-content-rle-block": (dcfbuild.zstd_frame(0, ZB(1, 1000, b"a", last=True), single_segment=False), 0),
    "empty-content-block-single-segment": (dcfbuild.zstd_frame(0, ZB(0, 1, b"a", last=True)), 0),
}
GOOD_FRAMES = {  # the boundaries, which both accept
    "window-exactly-2**27": (_frame(RAW32, single_segment=False, window_byte=window_byte(27)), 32),
    "raw-blocks-of-128KiB": (dcfbuild.zstd_frame(BIG, raw_blocks(RAW_BIG, 131072)), BIG // 4),
    "rle-block-of-128KiB": (dcfbuild.zstd_frame(BIG, ZB(1, 131072, b"\0", last=False) + ZB(1, BIG - 131072, b"\0", last=True)), BIG // 4),
    "blocks-of-the-window": (
        dcfbuild.zstd_frame(2000, raw_blocks(bytes(2000), 1024), single_segment=False, window_byte=window_byte(10)),
        500,
    ),
    "one-block-of-the-content": (dcfbuild.zstd_frame(128, ZB(0, 128, RAW32, last=True)), 32),
    "empty-blocks": (dcfbuild.zstd_frame(128, ZB(0, 0, b"", last=False) * 1000 + ZB(0, 128, RAW32, last=True)), 32),
    "empty-content-window-2**27": (dcfbuild.zstd_frame(0, single_segment=False, window_byte=window_byte(27)), 0),
    "libzstd-checksum": (zstandard.ZstdCompressor(write_checksum=True).compress(RAW32), 32),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_both_reject_zstd_tensor_frames_breaking_6_2_1(name):
    frame, numel = BAD_FRAMES[name]
    data = _zstd_tensor(frame, numel)
    # the frame check fires (6.2.1), not the decompressor; with no content, only decompression
    # finds that a block regenerates bytes (6.2: "a frame that produces a different number of bytes")
    assert ("§6.2" if name.startswith("empty-content") else "§6.2.1") in _reference_error(data, get="z")
    assert isinstance(_package_error(data, get="z"), dcformat.FormatError)


@pytest.mark.parametrize("name", sorted(GOOD_FRAMES))
def test_both_accept_zstd_tensor_frames_at_the_limits_of_6_2_1(name):
    frame, numel = GOOD_FRAMES[name]
    data = _zstd_tensor(frame, numel)
    want = zstandard.ZstdDecompressor().decompressobj().decompress(frame)
    assert len(want) == numel * 4
    assert refdecode.RefFile(data).decode("z").data == want
    assert dcformat.load(data)["z"].tobytes() == want


CODES = bytes([1, 0, 2])
BAD_STREAM_FRAMES = {  # 7.4: a zstd-coded stream is a frame "as in 6.2"
    "window-2**28": _frame(CODES, single_segment=False, window_byte=window_byte(28)),
    "block-over-the-content": dcfbuild.zstd_frame(3, ZB(1, 4, b"\1", last=True)),
    "reserved-block-type": dcfbuild.zstd_frame(3, ZB(3, 3, CODES, last=True)),
    "checksum-missing": dcfbuild.zstd_frame(3, ZB(0, 3, CODES, last=True), checksum=True),
    "byte-after-the-frame": _frame(CODES) + b"\0",
}


@pytest.mark.parametrize("name", sorted(BAD_STREAM_FRAMES))
def test_both_reject_zstd_stream_frames_breaking_6_2_1(name):
    data = _zstd_codes(BAD_STREAM_FRAMES[name])
    assert "§6.2.1" in _reference_error(data, get="q")
    assert isinstance(_package_error(data, get="q"), dcformat.FormatError)


@pytest.mark.parametrize(
    "frame",
    [
        _frame(CODES, single_segment=False, window_byte=window_byte(27)),
        _frame(CODES),
        dcfbuild.zstd_frame(3, ZB(1, 1, b"\1", last=False) + ZB(0, 2, b"\0\2", last=True)),
    ],
    ids=["window-exactly-2**27", "single-segment", "rle-then-raw"],
)
def test_both_accept_zstd_stream_frames_at_the_limits_of_6_2_1(frame):
    data = _zstd_codes(frame)
    assert refdecode.RefFile(data).decode("q").tolist() == [0.5, 0.0, -1.0]
    assert dcformat.load(data)["q"].tolist() == [0.5, 0.0, -1.0]


def _zstd_outcome(decode, frame: bytes, expected: int):
    try:
        return bytes(decode(frame, expected))
    except (refdecode.RefDecodeError, dcformat.DCFormatError):
        return None


def test_zstd_frame_checks_agree_on_mutants():
    """The reference's frame walk (6.2.1) and the package's (dcformat.codecs.zstd) accept and
    reject the same mutated frames, and decode the same bytes when both accept."""
    from dcformat.codecs import zstd as zstd_codec

    data = np.arange(700, dtype="<u2").tobytes()[:1300]
    bases = [
        zstandard.ZstdCompressor(level=3).compress(data),
        zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data),
        zstandard.ZstdCompressor().compress(b""),
        dcfbuild.zstd_frame(len(data), raw_blocks(data, 1024), single_segment=False, window_byte=window_byte(10)),
        dcfbuild.zstd_frame(len(data), ZB(1, 700, b"\7", last=False) + ZB(0, 600, data[:600], last=True), single_segment=False, window_byte=0),
        dcfbuild.zstd_frame(0, ZB(0, 0, b"", last=False) * 3 + ZB(0, 0, b"", last=True), single_segment=False, window_byte=window_byte(27)),
    ]
    package = lambda f, n: zstd_codec.decompress_exact(f, n, field="f", offset=0)  # noqa: E731
    reference = lambda f, n: refdecode._zstd_decompress(f, n, "f")  # noqa: E731
    rnd = random.Random(621)
    accepted = 0
    for _ in range(1500):
        base = rnd.choice(bases)
        expected = len(zstandard.ZstdDecompressor().decompressobj().decompress(base))
        frame = bytearray(base)
        for _ in range(rnd.randint(1, 2)):
            kind = rnd.random()
            at = rnd.randrange(min(len(frame), 24))  # mostly the frame and first block headers
            if kind < 0.4:
                frame[at] ^= 1 << rnd.randrange(8)
            elif kind < 0.7:
                frame[at] = rnd.choice([0, 1, 2, 3, 4, 5, 6, 7, 0x20, 0x24, 0x60, 0x80, 0x88, 0x90, 0xFF, rnd.randrange(256)])
            elif kind < 0.85:
                del frame[rnd.randrange(1, len(frame) + 1) :]  # keeps at least a byte
            else:
                frame += bytes(rnd.randrange(1, 4))
        got = _zstd_outcome(reference, bytes(frame), expected)
        assert got == _zstd_outcome(package, bytes(frame), expected), (bytes(frame).hex(), expected)
        accepted += got is not None
    assert accepted > 50  # the mutants are not all trivially broken
