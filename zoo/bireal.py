"""Bi-Real Net 18 and 34 (Liu, Wu, Luo, Yang, Liu, Cheng, "Bi-Real Net: Enhancing the
Performance of 1-bit CNNs With Improved Representational Capability and Advanced Training
Algorithm", arXiv 1808.00278), after the official PyTorch `BiReal18_34/birealnet.py`.
See docs/methods.md (section 'Bi-Real Net') and docs/zoo.md."""

from __future__ import annotations

from kbnn.blocks import BiRealBlock
from kbnn.blocks._common import check_pad_values, check_quantizer

from ._common import (
    ModelSpec,
    build_input,
    check_arguments,
    check_width_multiplier,
    finish_model,
    stage_widths,
    top,
)
from ._resnet import STAGE_CHANNELS, resnet_stem, single_conv_stages

__all__ = ["BiRealNet18", "BiRealNet34"]

_BLOCKS = {"BiRealNet18": ((4, 4, 4, 4), "bireal_net18"),
           "BiRealNet34": ((6, 8, 12, 6), "bireal_net34")}


def _bireal(architecture, include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name, width_multiplier, pad_values, input_quantizer,
            kernel_quantizer):
    blocks, default_name = _BLOCKS[architecture]
    spec = ModelSpec(architecture, default_name)
    width_multiplier = check_width_multiplier(architecture, width_multiplier)
    pad_values = check_pad_values(architecture, pad_values)
    check_quantizer(architecture, "input_quantizer", input_quantizer)
    check_quantizer(architecture, "kernel_quantizer", kernel_quantizer)
    shape = check_arguments(spec, include_top=include_top, weights=weights,
                            input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                            classes=classes, classifier_activation=classifier_activation,
                            name=name)
    image, inputs = build_input(input_tensor, shape)
    x = resnet_stem(image, stage_widths(STAGE_CHANNELS, width_multiplier)[0])

    def block(filters, strides, block_name):
        return BiRealBlock(filters, strides=strides, pad_values=pad_values,
                           symmetric_padding=True,
                           input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
                           name=block_name)

    x = single_conv_stages(x, blocks, width_multiplier, block)
    x = top(x, include_top=include_top, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation)
    return finish_model(spec, inputs, x, name=name, weights=weights)


_DOC = """Instantiates Bi-Real Net-{depth} (arXiv 1808.00278).

    Official PyTorch layout: stem 7x7/2 conv -> BN -> 3x3/2 max-pool (no activation); stages of
    {blocks} `BiRealBlock`s with 64, 128, 256, 512 channels: each block is
    ``BN(BinConv3x3(sign(x))) + shortcut(x)``, a real-valued shortcut around every binary
    convolution (AvgPool 2x2 -> real 1x1 conv -> BN where the block downsamples); global
    average pool -> Dense. Layer names ("stem_*", "stage{{s}}_block{{b}}", "predictions") and
    figures: docs/zoo.md.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "{default_name}".
        width_multiplier: scales the stage widths (64 * width_multiplier, rounded, then x2,
            x4, x8); 1.0 is the published model.
        pad_values: SAME padding of the binarized inputs: 0.0 (zeros, the official code) or
            1.0 (+1, LCE's native "same-one").
        input_quantizer, kernel_quantizer: quantizers of every binary convolution (alias,
            config dict, `Quantizer` instance or None); default "approx_sign" (Bi-Real's
            ApproxSign) and "magnitude_aware_sign" (sign times mean |W| per output channel).
            Other binarizers keep the Bi-Real layout, e.g. IR-Net (arXiv 1909.10788):
            ``input_quantizer="ede_sign", kernel_quantizer="libra_weight"``.

    Returns:
        A `keras.Model`.
    """


def BiRealNet18(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                width_multiplier=1.0, pad_values=0.0, input_quantizer="approx_sign",
                kernel_quantizer="magnitude_aware_sign"):
    return _bireal("BiRealNet18", include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name, width_multiplier, pad_values,
                   input_quantizer, kernel_quantizer)


def BiRealNet34(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                width_multiplier=1.0, pad_values=0.0, input_quantizer="approx_sign",
                kernel_quantizer="magnitude_aware_sign"):
    return _bireal("BiRealNet34", include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name, width_multiplier, pad_values,
                   input_quantizer, kernel_quantizer)


BiRealNet18.__doc__ = _DOC.format(depth=18, blocks="4, 4, 4, 4", default_name="bireal_net18")
BiRealNet34.__doc__ = _DOC.format(depth=34, blocks="6, 8, 12, 6", default_name="bireal_net34")
