"""XNOR-Net ResNet-18 (Rastegari, Ordonez, Redmon, Farhadi, "XNOR-Net: ImageNet Classification
Using Binary Convolutional Neural Networks", arXiv 1603.05279). See docs/methods.md (section
'XNOR-Net') and docs/zoo.md."""

from __future__ import annotations

import keras

from kbnn.blocks import XnorBlock
from kbnn.blocks._common import batch_norm

from ._common import Application, ModelSpec, check_block_options, stage_widths
from ._resnet import STAGE_CHANNELS, resnet_stem, stage_strides, symmetric_blocks

__all__ = ["XnorResNet18"]


def XnorResNet18(include_top=True, weights=None, input_tensor=None, input_shape=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                 width_multiplier=1.0, pad_values=0.0, activation_scale=False,
                 input_quantizer="ste_sign", kernel_quantizer="xnor_weight"):
    """Instantiates XNOR-Net ResNet-18 (arXiv 1603.05279).

    The paper binarizes ResNet-18 with its block order BN -> BinActiv -> BinConv and keeps the
    first and last layers real; no official ResNet code was released. kbnn builds He et al.'s
    ResNet-18 (arXiv 1512.03385) that way:

    * stem (real): 7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool;
    * stages of two basic blocks (64, 128, 256, 512 channels): ``y = XnorBlock(XnorBlock(x))``
      (each `XnorBlock` is BN -> sign -> binary 3x3 conv with XNOR weights
      ``alpha_o * sign(W)``), then ``y + shortcut(x)``; the shortcut is the identity, or a real
      1x1 stride-2 conv -> BN where the stage downsamples;
    * "post_bn" -> "post_relu" after the last block (the blocks are pre-activation, so the last
      sum is normalised before pooling), then global average pool -> Dense.

    BOPs 1.68e9, FLOPs 1.38e8, OPs 1.64e8 at 224x224 (the published 1.70e9 / 1.41e8 / 1.67e8
    come from the Bi-Real Net and ReActNet tables; docs/zoo.md).

    Layer names: "stem_conv", "stem_bn", "stem_relu", "stem_pool", "stage{s}_block{b}"
    (b = 1..4, one per binary conv; sub-layers "..._bn", "..._conv"),
    "stage{s}_block{b}_shortcut_conv"/"_bn" (b = 1, stages 2-4), "stage{s}_block{b}_add"
    (b = 2, 4), "post_bn", "post_relu", "avg_pool", "predictions".

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "xnor_resnet18".
        width_multiplier: scales the stage widths (64 * width_multiplier, rounded, then x2,
            x4, x8); 1.0 is the published model.
        pad_values: SAME padding of the binarized inputs: 0.0 (zeros) or 1.0 (+1, LCE's
            native "same-one").
        activation_scale: multiply each binary conv's output by the paper's activation scale
            K (see `kbnn.blocks.XnorBlock`; a float computation); default False, as the
            official code.
        input_quantizer, kernel_quantizer: quantizers of every binary convolution (alias,
            config dict, `Quantizer` instance or None); default "ste_sign" and "xnor_weight".

    Returns:
        A `keras.Model`.
    """
    app = Application(ModelSpec("XnorResNet18", "xnor_resnet18"), include_top, weights,
                      input_tensor, input_shape, pooling, classes, classifier_activation, name)
    options = {"activation_scale": activation_scale, "pad_values": pad_values,
               "input_quantizer": input_quantizer, "kernel_quantizer": kernel_quantizer}
    width_multiplier = check_block_options(app.spec, width_multiplier, XnorBlock, **options)
    image = app.input()
    widths = stage_widths(STAGE_CHANNELS, width_multiplier)
    x = resnet_stem(image, widths[0],
                    activation=keras.layers.Activation("relu", name="stem_relu"))
    xnor_block = symmetric_blocks(XnorBlock, **options)
    for stage, filters in enumerate(widths, start=1):
        for first in (1, 3):  # two basic blocks of two binary convolutions each
            strides = stage_strides(stage, first)
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                prefix = f"stage{stage}_block{first}_shortcut"
                shortcut = keras.layers.Conv2D(filters, 1, strides=strides, padding="same",
                                               use_bias=False, name=f"{prefix}_conv")(x)
                shortcut = batch_norm(f"{prefix}_bn")(shortcut)
            y = xnor_block(filters, strides, f"stage{stage}_block{first}")(x)
            y = xnor_block(filters, 1, f"stage{stage}_block{first + 1}")(y)
            x = keras.layers.Add(name=f"stage{stage}_block{first + 1}_add")([y, shortcut])
    x = batch_norm("post_bn")(x)
    x = keras.layers.Activation("relu", name="post_relu")(x)
    return app.model(app.top(x))
