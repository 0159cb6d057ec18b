"""Quantized Keras layers, BNN-specific layers, and the public export contract of quantized
layers (`QuantizedWeight`, `BinaryConvForm`, `register_export_form`, `export_scope`)."""

from kbnn.layers.base import QuantConvMixin, QuantizedLayerMixin
from kbnn.layers.bnext import BNextFFN, ELMAttention, InfoRecoupling, RangeClip, SqueezeExpand
from kbnn.layers.bnn import LearnableBias, Maxout, RPReLU
from kbnn.layers.conv import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D, QuantSeparableConv2D
from kbnn.layers.dense import QuantDense
from kbnn.layers.export import (
    BinaryConvForm,
    ExportRefusal,
    QuantizedWeight,
    export_form,
    export_override,
    export_scope,
    register_export_form,
    registered_export_forms,
)
from kbnn.layers.normalization import FusedBatchNormalization

__all__ = [
    "BNextFFN",
    "BinaryConvForm",
    "ELMAttention",
    "ExportRefusal",
    "FusedBatchNormalization",
    "InfoRecoupling",
    "LearnableBias",
    "Maxout",
    "QuantConv1D",
    "QuantConv2D",
    "QuantConvMixin",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantSeparableConv2D",
    "QuantizedLayerMixin",
    "QuantizedWeight",
    "RPReLU",
    "RangeClip",
    "SqueezeExpand",
    "export_form",
    "export_override",
    "export_scope",
    "register_export_form",
    "registered_export_forms",
]

# Methods II: FDA's noise adaptation module (arXiv 2103.00841), RepBNN's channel replication
# (arXiv 2207.09049).
from kbnn.layers.fda import NoiseAdaptation
from kbnn.layers.replicate import ChannelReplicate

__all__ += ["ChannelReplicate", "NoiseAdaptation"]
