"""DoReFa-Net k-bit quantizer for activations and weights (Zhou et al., arXiv 1606.06160)."""

from __future__ import annotations

import tensorflow as tf

from kbnn.quantizers._checks import check_choice, check_int_in_range
from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.registry import register_alias

__all__ = ["DoReFa", "dorefa_activations", "dorefa_weights", "floor_ste"]

_MODES = ("activations", "weights")


@tf.custom_gradient
def floor_ste(v):
    """floor(v) with the identity (straight-through) gradient, the rounding STE of DoReFa-Net
    (Zhou et al., arXiv 1606.06160)."""
    return tf.floor(v), lambda dy: dy


def _levels(k_bit: int) -> float:
    return float(2**k_bit - 1)


def dorefa_activations(x, k_bit: int = 2):
    """DoReFa-Net activations (Zhou et al., arXiv 1606.06160): ``round(clip(x, 0, 1) * n) / n``
    with ``n = 2^k - 1``; gradient 1 on [0, 1], 0 outside.

    Ties round up (``round(v) = floor(v - 0.5) + 1``, exact for v in [0.25, n]), so for
    ``k_bit = 1`` the output is exactly ``1 if x >= 0.5 else 0``. For ``k_bit = 1`` it is
    computed as the binarizer it is, ``0.5 * s(x - 0.5) + 0.5`` with `binary_sign` (the same
    gradient), so that NaN gives 1 as in LCE's `LceQuantize` (the rounding form gives NaN).
    """
    x = tf.convert_to_tensor(x)
    if k_bit == 1:
        def surrogate(u):  # d/dx of 0.5 * s(x - 0.5) is 1 on [0, 1]: s' = 2 on |u| <= 0.5
            return 2.0 * tf.cast(tf.abs(u) <= 0.5, u.dtype)

        return 0.5 * sign_with_surrogate_grad(x - tf.constant(0.5, x.dtype), surrogate) + 0.5
    n = tf.constant(_levels(k_bit), x.dtype)
    clipped = tf.clip_by_value(x, tf.constant(0.0, x.dtype), tf.constant(1.0, x.dtype))
    return (floor_ste(clipped * n - 0.5) + 1.0) / n


def dorefa_weights(w, k_bit: int = 2):
    """DoReFa-Net weights (Zhou et al., arXiv 1606.06160):
    ``w' = tanh(w) / (2 max|tanh(w)|) + 0.5``, ``q = round(w' n) / n``, output ``2 q - 1``; the
    gradient is autograd's, straight through the rounding.

    With ``c = w' - 0.5`` in [-0.5, 0.5] and n odd, ``round(w' n) = floor(c n) + (n + 1) / 2``
    (ties up), so the output is computed as ``(2 floor(c n) + 1) / n``: the same value, without
    the rounding error of adding 0.5 (for ``k_bit = 1`` it is exactly ``sign(w)``).
    """
    w = tf.convert_to_tensor(w)
    n = tf.constant(_levels(k_bit), w.dtype)
    t = tf.tanh(w)
    # max|tanh| = 0 only when w == 0 everywhere; the floor keeps that case finite (output +1).
    m = tf.maximum(tf.reduce_max(tf.abs(t)), tf.constant(1e-30, w.dtype))
    c = t / (2.0 * m)
    return (2.0 * floor_ste(c * n) + 1.0) / n


@register_alias("dorefa")
class DoReFa(Quantizer):
    """DoReFa-Net k-bit quantizer (Zhou et al., arXiv 1606.06160).

    * ``mode="activations"``: clip to [0, 1], round to ``k_bit`` bits
      (``round(x (2^k - 1)) / (2^k - 1)``, ties up); STE gradient 1 on [0, 1], 0 outside.
    * ``mode="weights"``: ``w' = tanh(w) / (2 max|tanh(w)|) + 0.5``, rounded as above, output
      ``2 q - 1`` in [-1, 1]; the gradient flows through tanh and the max (STE at the rounding).

    With ``k_bit=1`` the quantizer is a binarizer: activations are ``0.5 s(x - 0.5) + 0.5``
    and weights ``s(w)``, exposed through `binary_form`.

    Args:
        k_bit: number of bits, an integer in [1, 32].
        mode: "activations" or "weights".
    """

    def __init__(self, k_bit: int = 2, mode: str = "activations", **kwargs):
        super().__init__(**kwargs)
        self.k_bit = check_int_in_range("DoReFa", "k_bit", k_bit, 1, 32)
        self.mode = check_choice("DoReFa", "mode", mode, _MODES)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return self.k_bit

    @property
    def applies_to(self) -> str:  # type: ignore[override]
        """"weights" for ``mode="weights"`` (normalised by the kernel's max), else
        "activations"."""
        return "weights" if self.mode == "weights" else "activations"

    def _checked_mode(self) -> str:
        # `mode` and `k_bit` are plain attributes: a value assigned after construction is
        # checked where it is used, so a typo cannot silently select the weights formula.
        check_int_in_range("DoReFa", "k_bit", self.k_bit, 1, 32)
        return check_choice("DoReFa", "mode", self.mode, _MODES)

    def call(self, inputs, training=None):
        if self._checked_mode() == "activations":
            return dorefa_activations(inputs, self.k_bit)
        return dorefa_weights(inputs, self.k_bit)

    def binary_form(self, inputs):
        mode = self._checked_mode()
        if self.k_bit != 1:
            return None
        if mode == "activations":
            return BinaryForm(threshold=0.5, scale=0.5, offset=0.5)
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "k_bit": self.k_bit, "mode": self.mode}
