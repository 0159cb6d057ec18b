"""The identity quantizer, for layers whose inputs or weights stay real-valued."""

from __future__ import annotations

from kbnn.quantizers._checks import check_int_in_range
from kbnn.quantizers.base import Quantizer
from kbnn.quantizers.registry import register_alias

__all__ = ["NoOp"]


@register_alias("noop")
class NoOp(Quantizer):
    """Identity quantizer, as larq's NoOp (Geiger & Team Plumerai, "Larq", JOSS 2020).

    Passes its input through unchanged, forward and backward. `precision` only records the
    number of bits the values are meant to have (for `kbnn.summary` / `kbnn.profile`); it does
    not change the values, and `binary_form` is always None.

    Args:
        precision: bits recorded for summaries, an integer in [1, 32].
    """

    def __init__(self, precision: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.precision = check_int_in_range("NoOp", "precision", precision, 1, 32)

    def call(self, inputs, training=None):
        return inputs

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}
