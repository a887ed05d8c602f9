"""codecs/zstd.py: frames decompressed to exactly the size they must have."""

from __future__ import annotations

import threading

import pytest
import zstandard

from dcformat.codecs import zstd
from dcformat.errors import FormatError


def test_a_thread_decodes_good_frames_after_a_corrupt_one():
    """Each thread reuses one decompressor: an error must leave it ready for the next frame."""
    good = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(bytes(range(256)) * 40)
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(FormatError, match="zstd"):
        zstd.decompress_exact(bytes(corrupt), 256 * 40, field="payload", offset=0)
    assert zstd.decompress_exact(good, 256 * 40, field="payload", offset=0) == bytes(range(256)) * 40


def test_threads_decode_side_by_side():
    frames = [zstandard.ZstdCompressor(level=1).compress(bytes([k]) * (1000 + k)) for k in range(64)]
    results = {}

    def work(k):
        results[k] = [zstd.decompress_exact(frames[j], 1000 + j, field="payload", offset=0) for j in range(64)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == [bytes([j]) * (1000 + j) for j in range(64)]
