"""Quantized Keras layers and BNN-specific layers."""

from kbnn.layers.bnn import LearnableBias, Maxout, RPReLU
from kbnn.layers.conv import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D, QuantSeparableConv2D
from kbnn.layers.dense import QuantDense

__all__ = [
    "LearnableBias",
    "Maxout",
    "QuantConv1D",
    "QuantConv2D",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantSeparableConv2D",
    "RPReLU",
]
