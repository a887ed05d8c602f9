"""Symbol streams (spec section 7): bit packing, canonical Huffman in interleaved lanes,
zstd, and the stream framing that picks among them. Nothing here knows a tensor."""
