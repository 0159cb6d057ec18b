"""Quantizers: training form (surrogate gradient) and inference form (affine-binary)."""

from kbnn.quantizers.base import BinaryForm, Quantizer, binary_sign, sign_with_surrogate_grad
from kbnn.quantizers.registry import deserialize, get, known_aliases, register_alias, serialize
from kbnn.quantizers.sign import ApproxSign, SteSign, approx_sign, approx_sign_grad, ste_sign

__all__ = [
    "ApproxSign",
    "BinaryForm",
    "Quantizer",
    "SteSign",
    "approx_sign",
    "approx_sign_grad",
    "binary_sign",
    "deserialize",
    "get",
    "known_aliases",
    "register_alias",
    "serialize",
    "sign_with_surrogate_grad",
    "ste_sign",
]
