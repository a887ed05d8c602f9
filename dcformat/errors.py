"""The package's exceptions: one root, a few kinds, messages that name the field.

Every message has the shape ``"<operation> error: <field> at byte <offset>: <reason>"``
(python-zstandard's habit), so a user reading a traceback knows which part of which
file is wrong without a debugger. Decoders raise only these for bad input.
"""

from __future__ import annotations


class DCFormatError(Exception):
    """Root of every error dcformat raises on purpose."""


class EncodeError(DCFormatError, ValueError):
    """The caller asked the encoder for something it cannot store (bad tensor, bad option)."""

    def __init__(self, reason: str, *, field: str | None = None):
        self.field = field
        self.reason = reason
        where = f"{field}: " if field else ""
        super().__init__(f"encode error: {where}{reason}")


class FormatError(DCFormatError):
    """A file (or byte string) is not a valid dcformat file.

    ``field`` is a path such as ``tensors['fc1.weight'].codes.lane_count`` and
    ``offset`` the absolute byte offset in the file where that field starts, when known.
    """

    operation = "decode"

    def __init__(self, field: str, reason: str, *, offset: int | None = None):
        self.field = field
        self.offset = offset
        self.reason = reason
        at = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.operation} error: {field}{at}: {reason}")


class ChecksumError(FormatError):
    """A stored CRC-32 does not match the bytes it covers."""


class LimitError(FormatError):
    """A declared size or count exceeds a limit of the spec (section 9) or of the file."""


class UnsupportedError(FormatError):
    """The file uses a version, encoding, coder or dtype this reader does not know."""
