"""No small hostile file can make the decoder allocate much or run long (spec sections 8, 9).

Every case is a hand-built file of about a kilobyte (a few are larger where the attack
needs bytes, e.g. deep JSON nesting) whose CRCs are all valid, so it reaches the field it
attacks: huge declared shapes, counts, lengths, lane counts, codebook sizes, zstd content
sizes. Each must either raise a :class:`dcformat.DCFormatError` or decode legitimately,
within the documented bounds: peak traced memory (numpy's buffers included) under
``PEAK_LIMIT`` and time under ``TIME_LIMIT``, for opening, ``get`` of every tensor and
``verify``.
"""

from __future__ import annotations

import struct
import time
import tracemalloc

import numpy as np
import pytest

import dcformat
from dcformat import FormatError, LimitError
from fuzz import dcfbuild as B
from fuzz.dcfbuild import T

MIB = 1 << 20
PEAK_LIMIT = 64 * MIB
TIME_LIMIT = 2.0  # seconds of CPU time for the whole case
U32, U64 = 2**32 - 1, 2**64 - 1
F32, F16, RAW, ZSTD, DENSE, SPARSE = 1, 2, 1, 2, 3, 4
BITPACK, HUFFMAN, ZSTD_CODER = 1, 2, 3
OK = "ok"


def one(encoding: int, shape, payload: bytes, *, dtype: int = F32, **kw) -> bytes:
    return B.build([T(b"t", dtype, encoding, tuple(shape), payload, **kw)])


def dense(shape, k: int, n: int, streams: bytes, codebook: bytes | None = None, **kw) -> bytes:
    codebook = B.f32(*range(k)) if codebook is None else codebook
    return one(DENSE, shape, B.quant(codebook, k, n, streams, **kw))


def sparse(shape, k: int, n: int, streams: bytes, gap_bits: int = 4) -> bytes:
    return one(SPARSE, shape, B.quant(B.f32(*range(k)), k, n, streams, gap_bits=gap_bits))


def huff(shape_n: int, body: bytes, k: int = 2) -> bytes:
    return dense((shape_n,), k, shape_n, B.stream(HUFFMAN, body))


def expansion_elements(payload_length: int, itemsize: int = 4) -> int:
    """The most elements a payload of this length may decode to (spec 9.1)."""
    return 65536 * (payload_length + 64) // itemsize


def at_limit(make) -> bytes:
    """A one-tensor float32 file whose ``make(n) -> (encoding, payload)`` declares n elements, n the
    most its payload's length allows (the payload's length must not depend on n)."""
    encoding, payload = make(0)
    n = expansion_elements(len(payload))
    encoding, payload = make(n)
    return one(encoding, (n,), payload)


# The longest code lengths a complete code can have: 1, 2, ..., 19, 20, 20 (a 2**20 table).
LONGEST = list(range(1, 20)) + [20, 20]


def _cases() -> dict[str, tuple[bytes, object]]:
    base = B.build([T(b"t", F32, RAW, (2,), b"\0" * 8)])
    k1_dense_payload = 16 + 4 + 9  # K = 1, an empty bit-packed stream
    k1_sparse_payload = 16 + 4 + 9 + 9
    cases = {
        # -- header and index (spec 3, 9)
        "tensor_count_over_limit": (B.patch_header(base, tensor_count=2**24 + 1), LimitError),
        "tensor_count_at_limit_empty_directory": (B.build(tensor_count=2**24), FormatError),
        "tensor_count_u32_max": (B.patch_header(base, tensor_count=U32), LimitError),
        "metadata_length_u32_max": (B.patch_header(base, metadata_length=U32), LimitError),
        "directory_length_u32_max": (B.patch_header(base, directory_length=U32), LimitError),
        "index_offset_u64_max": (B.patch_header(base, index_offset=U64), FormatError),
        "metadata_deep_nesting": (B.build(metadata=b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), FormatError),
        "metadata_5000_digit_integer": (B.build(metadata=b'{"a":' + b"9" * 5000 + b"}"), FormatError),
        # -- directory (spec 5)
        "shape_product_overflows_u64": (one(RAW, (U64,) * 32, b""), LimitError),
        "shape_2_pow_48_elements_raw": (one(RAW, (2**48,), b""), LimitError),
        "shape_2_pow_48_plus_1": (one(RAW, (2**24 + 1, 2**24), b""), LimitError),
        "raw_declares_4_mb_holds_16_bytes": (one(RAW, (10**6,), b"\0" * 16), FormatError),
        # -- zstd tensors (spec 6.2)
        "zstd_content_size_2_pow_40": (one(ZSTD, (2**38,), B.zstd_frame(2**40)), LimitError),
        "zstd_content_size_u64_max": (one(ZSTD, (2**40,), B.zstd_frame(U64)), LimitError),
        "zstd_declares_limit_delivers_128_k": (
            at_limit(lambda n: (ZSTD, B.zstd_frame(n * 4, B.zstd_block(1, 1 << 17, b"\1", last=True)))),
            FormatError,
        ),
        "zstd_frame_without_content_size": (one(ZSTD, (4,), B.zstd_frame(None, single_segment=False, window_byte=0)), FormatError),
        # RFC 8878 lets a frame ask for a 3.75 TB window and lets a decoder refuse it; spec 6.2 is silent
        # (reported). libzstd refuses windows over 2**27 by default; an 8 MiB window decodes.
        "zstd_window_3_75_tb": (
            one(ZSTD, (4,), B.zstd_frame(16, B.zstd_block(1, 16, b"\0", last=True), single_segment=False, window_byte=0xFF)),
            FormatError,
        ),
        "zstd_window_8_mib": (
            one(ZSTD, (4,), B.zstd_frame(16, B.zstd_block(1, 16, b"\0", last=True), single_segment=False, window_byte=13 << 3)),
            OK,
        ),
        "zstd_many_rle_blocks_past_content_size": (
            one(ZSTD, (1000,), B.zstd_frame(4000, B.zstd_block(1, 1 << 17, b"\0", last=False) * 60 + B.zstd_block(0, 0, b"", last=True))),
            FormatError,
        ),
        # -- quantized payloads (spec 6.3-6.5)
        "codebook_size_65536_tiny_payload": (dense((4,), 65536, 4, b"", codebook=b""), FormatError),
        "codebook_size_u32_max": (dense((4,), U32, 4, b"", codebook=b""), LimitError),
        "entry_count_u64_max_dense": (dense((4,), 1, U64, B.stream(BITPACK, b"")), FormatError),
        "entry_count_u64_max_sparse": (sparse((4,), 1, U64, B.stream(BITPACK, b"") * 2), FormatError),
        "stream_body_length_u64_max": (dense((4,), 2, 4, B.stream(BITPACK, b"\0", body_length=U64)), FormatError),
        "dense_k1_at_expansion_limit": (
            dense((expansion_elements(k1_dense_payload),), 1, expansion_elements(k1_dense_payload), B.stream(BITPACK, b"")),
            OK,
        ),
        "dense_k1_one_past_expansion_limit": (
            dense((expansion_elements(k1_dense_payload) + 1,), 1, expansion_elements(k1_dense_payload) + 1, B.stream(BITPACK, b"")),
            LimitError,
        ),
        "sparse_no_entries_at_expansion_limit": (sparse((expansion_elements(k1_sparse_payload),), 1, 0, B.stream(BITPACK, b"") * 2), OK),
        "sparse_gaps_16_bits_past_the_end": (sparse((1000,), 1, 2, B.stream(BITPACK, b"") + B.stream(BITPACK, b"\xff" * 4), 16), FormatError),
        "zstd_codes_declare_n_deliver_less": (
            at_limit(lambda n: (DENSE, B.quant(B.f32(0), 1, n, B.stream(ZSTD_CODER, B.zstd_frame(n))))),
            FormatError,
        ),
        # -- Huffman streams (spec 7.3)
        "huffman_n_1m_body_40_bytes": (huff(10**6, B.huffman(2, [1, 1], 16, 0, 0, [], 10**6, b"")), LimitError),
        "huffman_table_symbols_u32_max": (huff(8, struct.pack("<I", U32) + b"\0" * 64), FormatError),
        "huffman_lane_count_u32_max": (huff(8, B.huffman(2, [1, 1], U32, 1, 0, [], 8, b"\0")), FormatError),
        "huffman_lane_base_u64_max": (huff(8, B.huffman(2, [1, 1], 1, U64, 0, [], 8, b"\0")), FormatError),
        "huffman_delta_width_64_max_deltas": (huff(16, B.huffman(2, [1, 1], 2, 8, 64, [U64, U64], 16, b"\0\0")), FormatError),
        "huffman_deltas_wrap_u64": (huff(16, B.huffman(2, [1, 1], 2, 2**63, 64, [2**63 + 8, 2**63 + 8], 16, b"\0\0")), FormatError),
        "huffman_payload_bits_u64_max": (huff(8, B.huffman(2, [1, 1], 1, 8, 0, [], U64, b"\0")), FormatError),
        "huffman_one_bit_lanes_n_8000": (huff(8000, B.huffman(2, [1, 1], 8000, 1, 0, [], 8000, b"\x5a" * 1000)), OK),
        "huffman_one_lane_8000_symbols": (huff(8000, B.huffman(2, [1, 1], 1, 8000, 0, [], 8000, b"\xa5" * 1000)), OK),
        "huffman_lane_runs_past_payload": (huff(8000, B.huffman(21, LONGEST, 1, 8000, 0, [], 8000, b"\xff" * 1000), k=21), FormatError),
        "huffman_2_pow_20_tables_x6": (
            B.build(
                [
                    T(
                        b"t%d" % i,
                        F32,
                        DENSE,
                        (1,),
                        B.quant(B.f32(*range(21)), 21, 1, B.stream(HUFFMAN, B.huffman(21, LONGEST, 1, 1, 0, [], 1, b"\0"))),
                    )
                    for i in range(6)
                ]
            ),
            OK,
        ),
    }
    return cases


CASES = _cases()


def decode_everything(data: bytes) -> list:
    """Open, get() every tensor, verify(), then load() the file on one thread and on two (the
    page reserve and the workers of ``io.loading.decoding``); the outcome of each step (OK
    or an error type)."""
    try:
        f = dcformat.DCFile(data)
    except dcformat.DCFormatError as exc:
        return [type(exc)]
    outcomes = []
    with f:
        for name in f.keys():
            try:
                array = f.get(name)
            except dcformat.DCFormatError as exc:
                outcomes.append(type(exc))
                continue
            assert array.nbytes == f.decoded_bytes(name) <= f.max_expansion * (f.entry(name).length + 64)
            del array
            outcomes.append(OK)
        try:
            f.verify()
        except dcformat.DCFormatError as exc:
            outcomes.append(type(exc))
        else:
            outcomes.append(OK)
    for threads in (1, 2):
        try:
            dcformat.load(data, threads=threads)
        except dcformat.DCFormatError as exc:
            outcomes.append(type(exc))
        else:
            outcomes.append(OK)
    return outcomes


def measure(data: bytes) -> tuple[list, int, float]:
    """(outcomes, peak traced bytes, CPU seconds) of :func:`decode_everything`."""
    tracemalloc.start()
    try:
        start = time.process_time()
        outcomes = decode_everything(data)
        seconds = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return outcomes, peak, seconds


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_bounded(name):
    data, expected = CASES[name]
    outcomes, peak, seconds = measure(data)
    assert peak < PEAK_LIMIT, f"{name}: peak {peak / MIB:.1f} MiB"
    assert seconds < TIME_LIMIT, f"{name}: {seconds:.2f} s"
    if expected is OK:
        assert set(outcomes) == {OK}, outcomes
    else:
        assert outcomes[0] is not OK and issubclass(outcomes[0], expected), outcomes
        assert all(o is OK or issubclass(o, dcformat.DCFormatError) for o in outcomes)


def test_hostile_cases_are_small():
    """The attacks are cheap: all but the deliberately long metadata fit in ~1.5 KB."""
    sizes = {name: len(data) for name, (data, _) in CASES.items() if not name.startswith("metadata_")}
    assert max(sizes.values()) <= 1536, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_legal_decode_at_the_expansion_limit_is_bounded():
    """The largest legal output of a 29-byte payload, and spec 9.2's per-symbol state, is all it takes.

    Measured: 18.9 MiB for a 5.8 MiB float32 tensor, i.e. the output (4 B/element), the
    codes (1 B/element) and numpy's intp copy of them inside ``np.take`` (8 B/element):
    within 9.2's "one word per symbol", though a chunked gather would need only the output.
    """
    data, _ = CASES["dense_k1_at_expansion_limit"]
    elements = expansion_elements(29)
    outcomes, peak, _ = measure(data)
    assert outcomes == [OK, OK, OK, OK]  # get, verify, load on one thread and on two
    assert peak < elements * (4 + 1 + 8) + 4 * MIB, f"peak {peak / MIB:.1f} MiB for a {elements * 4 / MIB:.1f} MiB tensor"


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((0, 2**62), LimitError),  # found by the fuzzer: numpy's reshape raised ValueError (fixed)
        ((2**62, 0), LimitError),
        ((2**30, 2**30, 0), LimitError),
        ((0, 2**48), OK),
        ((0, 2**48 + 1), LimitError),
        ((2**24, 0, 2**24), OK),
    ],
)
def test_zero_element_shapes_bound_the_nonzero_dimensions(shape, expected):
    """Spec 5.1.2: the product of the nonzero dimensions is at most 2**48, whatever their order."""
    outcomes = decode_everything(one(RAW, shape, b""))
    assert outcomes == ([OK] * 4 if expected is OK else [expected])


def test_huffman_lookup_table_is_the_only_constant():
    """A one-symbol stream with a 20-bit code builds a 2**20-entry table: about 40 MiB, spec 9.2's constant."""
    data, _ = CASES["huffman_2_pow_20_tables_x6"]
    with dcformat.DCFile(data) as f:
        tracemalloc.start()
        try:
            f.get("t0")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 48 * MIB, f"{peak / MIB:.1f} MiB"
    assert np.isfinite(peak)


@pytest.mark.parametrize("elements", [2**36, 2**40, 2**44])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_load_names_the_limit_for_sizes_no_payload_can_hold(elements, threads, monkeypatch):
    """A load maps its outputs' pages before decoding (``io.loading.decoding``): a tensor
    declaring terabytes from a 29-byte payload must still fail with the expansion limit named,
    not with the address space refusing the mapping, and is given no pages at all."""
    from dcformat import kernels

    asked = []
    reserve = kernels.output_reserve
    monkeypatch.setattr(kernels, "output_reserve", lambda sizes: reserve(asked.extend(sizes) or asked))
    data = dense((elements,), 1, elements, B.stream(BITPACK, b""))
    with pytest.raises(LimitError, match="expansion limit"):
        dcformat.load(data, threads=threads)
    assert asked == []


def test_a_load_without_room_for_its_reserve_maps_each_tensor_alone(monkeypatch):
    from dcformat import kernels

    def refused(sizes):
        raise MemoryError

    data, _ = CASES["dense_k1_at_expansion_limit"]
    expected = dcformat.load(data)
    monkeypatch.setattr(kernels, "output_reserve", refused)
    for name, array in dcformat.load(data, threads=2).items():
        assert np.array_equal(array, expected[name])
