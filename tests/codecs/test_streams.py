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


def test_zstd_is_kept_only_where_it_saves_what_it_is_asked_to():
    """streams.encode's ``zstd_min_saving``: a stream zstd codes some percent smaller than the
    other coders stays zstd below that saving and takes the best of the others above it."""
    rng = np.random.default_rng(11)
    phrase = rng.integers(0, 16, 3000, dtype=np.uint8)
    symbols = np.concatenate([phrase, rng.integers(0, 16, 3000, dtype=np.uint8), phrase])  # a repeat only zstd sees
    sizes = {coder: len(streams.encode(symbols, 16, coder=coder)) for coder in Coder}
    other = min((Coder.BITPACK, Coder.HUFFMAN), key=sizes.get)
    saving = 1 - sizes[Coder.ZSTD] / sizes[other]
    assert 0.05 < saving < 0.5, sizes

    def chosen(min_saving: float) -> Coder:
        return Coder(streams.encode(symbols, 16, zstd_min_saving=min_saving)[0])

    assert chosen(0.0) == chosen(saving - 0.01) == Coder.ZSTD
    assert chosen(saving + 0.01) == other
