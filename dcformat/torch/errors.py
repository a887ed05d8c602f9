"""Exceptions of the torch adapter, under the package's root ``DCFormatError``.

Each also derives from the builtin a caller would naturally catch (``ValueError``), so
``except ValueError`` keeps working for code that does not know dcformat.
"""

from __future__ import annotations

from dcformat.errors import DCFormatError


class ConfigError(DCFormatError, ValueError):
    """A user argument is invalid: unknown parameter name, bad sparsity, bits or option."""

    def __init__(self, operation: str, reason: str):
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation} error: {reason}")


class ModelMismatchError(DCFormatError, ValueError):
    """A file or state dict does not fit the model it is loaded into (names or shapes)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"load error: {reason}")
