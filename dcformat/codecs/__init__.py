"""Symbol-stream coders and the tensor encodings built on them (spec sections 6 and 7)."""
