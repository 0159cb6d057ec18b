"""The one exception type of kbnn.converters."""

from __future__ import annotations

__all__ = ["ConversionError"]


class ConversionError(RuntimeError):
    """A model (or one of its layers) cannot be converted as asked.

    Attributes:
        layer: name of the offending layer, or ``None`` for model-level problems.
        reason: why it cannot be converted.
        fix: what to change.
    """

    def __init__(self, reason: str, *, layer: str | None = None, fix: str | None = None):
        self.layer = layer
        self.reason = reason
        self.fix = fix
        where = f"Layer {layer!r}: " if layer else ""
        hint = f" Fix: {fix}" if fix else ""
        stop = "" if reason.rstrip().endswith((".", "!", "?")) else "."
        super().__init__(f"{where}{reason.rstrip()}{stop}{hint}")
