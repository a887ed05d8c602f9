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
import sys

import numpy as np
import pytest

import dcformat
from fuzz import dcfbuild, harness
from tests.support.optional import needs_ml_dtypes
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
sys.path.insert(0, str(ROOT / "tools"))
import refdecode  # noqa: E402

VECTORS = ROOT / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))


def storage_bytes(array: np.ndarray) -> bytes:
    """C-order little-endian storage bytes (bool as 0/1 bytes, bfloat16 as its 16 bits)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind in "fiu" and array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


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


def _package(data: bytes):
    """Every tensor's storage bytes as the package decodes them, or the error type."""
    try:
        with dcformat.DCFile(data) as f:
            f.check_padding()
            return {name: storage_bytes(f.get(name)) for name in f.keys()}
    except dcformat.DCFormatError as exc:
        return type(exc).__name__


def _reference(data: bytes):
    try:
        return {t.name: t.data for t in refdecode.RefFile(data).verify()}
    except refdecode.RefDecodeError as exc:
        return str(exc)


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
            package = _package(data)
        except Exception as exc:
            if harness.known_open_bug(data, exc) is None:
                raise
            continue
        reference = _reference(data)
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
    }
    for label, data in bad.items():
        assert isinstance(_reference(data), str), label
        assert isinstance(_package(data), str), label


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
    assert "zstd" in _reference(EMPTY_FRAME_GARBAGE)
    assert "after the zstd frame" in _reference(_empty_zstd_stream_file(dcfbuild.zstd_frame(0)))
    assert _reference(_empty_zstd_stream_file(b"")) == {"w": bytes(32)}
    assert _package(_empty_zstd_stream_file(b"")) == {"w": bytes(32)}


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
    assert isinstance(_package(data), str)
    assert isinstance(_reference(data), str)
