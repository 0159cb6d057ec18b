"""Bi-Real Net 18 and 34 (Liu, Wu, Luo, Yang, Liu, Cheng, "Bi-Real Net: Enhancing the
Performance of 1-bit CNNs With Improved Representational Capability and Advanced Training
Algorithm", arXiv 1808.00278), after the official PyTorch `BiReal18_34/birealnet.py`.
See docs/methods.md (section 'Bi-Real Net') and docs/zoo.md."""

from __future__ import annotations

from kbnn.blocks import BiRealBlock

from ._common import Application, ModelSpec, check_binary_options, stage_widths
from ._resnet import STAGE_CHANNELS, resnet_stem, single_conv_stages, symmetric_blocks

__all__ = ["BiRealNet18", "BiRealNet34"]

_BLOCKS = {"BiRealNet18": ((4, 4, 4, 4), "bireal_net18"),
           "BiRealNet34": ((6, 8, 12, 6), "bireal_net34")}


def bireal_resnet(app: Application, blocks_per_stage, width_multiplier, pad_values,
                  input_quantizer, kernel_quantizer, after_block=None):
    """Bi-Real Net's layout (also ReActNet's ResNet-18, with `after_block`): the options
    checked (`check_binary_options`), the ResNet stem, stages of `BiRealBlock`s
    (`single_conv_stages`, `after_block` after each), the head; the model of `app`."""
    width_multiplier, pad_values, _, _ = check_binary_options(
        app.spec.architecture, width_multiplier, pad_values, input_quantizer, kernel_quantizer)
    x = resnet_stem(app.input(), stage_widths(STAGE_CHANNELS, width_multiplier)[0])
    block = symmetric_blocks(BiRealBlock, pad_values=pad_values,
                             input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer)
    x = single_conv_stages(x, blocks_per_stage, width_multiplier, block, after_block=after_block)
    return app.model(app.top(x))


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


def _builder(architecture: str, depth: int):
    blocks, default_name = _BLOCKS[architecture]

    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                width_multiplier=1.0, pad_values=0.0, input_quantizer="approx_sign",
                kernel_quantizer="magnitude_aware_sign"):
        app = Application(ModelSpec(architecture, default_name), include_top, weights,
                          input_tensor, input_shape, pooling, classes, classifier_activation,
                          name)
        return bireal_resnet(app, blocks, width_multiplier, pad_values, input_quantizer,
                             kernel_quantizer)

    builder.__name__ = builder.__qualname__ = architecture
    builder.__module__ = __name__
    builder.__doc__ = _DOC.format(depth=depth, blocks=", ".join(map(str, blocks)),
                                  default_name=default_name)
    return builder


BiRealNet18 = _builder("BiRealNet18", 18)
BiRealNet34 = _builder("BiRealNet34", 34)
