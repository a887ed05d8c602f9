"""Symbol streams (spec 7.1): the alphabet check after decoding, and when it can be skipped."""

from __future__ import annotations

import numpy as np
import pytest

from dcformat.codecs import streams, zstd
from dcformat.errors import FormatError
from dcformat.format.constants import Coder


def zstd_stream(symbols: np.ndarray, alphabet_size: int) -> streams.StreamPlan:
    body = zstd.compress(symbols.astype(symbols.dtype.newbyteorder("<")).tobytes())
    return streams.plan(Coder.ZSTD, memoryview(body), symbols.size, alphabet_size, field="s", offset=0)


@pytest.mark.parametrize(("alphabet_size", "needed"), [(2, True), (255, True), (256, False), (257, True), (65535, True), (65536, False)])
def test_the_scan_is_skipped_only_where_the_dtype_holds_nothing_but_symbols(alphabet_size, needed):
    stream = zstd_stream(np.zeros(4, dtype=np.uint8 if alphabet_size <= 256 else np.uint16), alphabet_size)
    assert streams.symbols_need_checking(stream) is needed


def test_every_byte_is_a_symbol_of_a_256_alphabet_and_a_symbol_past_a_smaller_one_is_refused():
    symbols = np.arange(256, dtype=np.uint8)
    assert np.array_equal(streams.decode(zstd_stream(symbols, 256)), symbols)
    with pytest.raises(FormatError, match="symbol 255 is outside the alphabet of 200"):
        streams.decode(zstd_stream(symbols, 200))
