"""The container format of spec/dcformat.md: wire constants, byte layouts, dtypes, the
rules the reader and writer share, the payload encodings (checked plans), the numpy
decoding kernels, and the lazy reader and streaming writer.

Layers below: ``dcformat.codecs`` (spec section 7), ``errors``, ``parallel``.
"""
