"""The ResNet-18/34 skeleton shared by the Bi-Real Net, ReActNet (ResNet), XNOR-Net and AdaBin
builders: the ImageNet stem (7x7/2 conv -> BN -> [activation] -> 3x3/2 max-pool), four stages
of 64, 128, 256, 512 channels (times `width_multiplier`) and the stage/block naming scheme."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kbnn.blocks._common import batch_norm

from ._common import stage_widths
from ._padding import torch_conv2d, torch_max_pool2d

__all__ = ["STAGE_CHANNELS", "resnet_stem", "single_conv_stages", "stage_strides",
           "symmetric_blocks"]

STAGE_CHANNELS = (64, 128, 256, 512)


def resnet_stem(x, filters: int, activation: Callable | None = None):
    """Real-valued stem with PyTorch's padding (`_padding`): "stem_conv_pad" (3 pixels of zeros
    on every side) -> "stem_conv" (7x7, stride 2, VALID, no bias) -> "stem_bn" ->
    `activation(x)` when given -> "stem_pool_pad" (1 pixel of the lowest float32, PyTorch's
    -inf) -> "stem_pool" (3x3 max-pool, stride 2, VALID): the official
    ``Conv2d(7, 2, padding=3)`` and ``MaxPool2d(3, 2, padding=1)``."""
    x = torch_conv2d(x, filters, 7, 2, name="stem_conv")
    x = batch_norm("stem_bn")(x)
    if activation is not None:
        x = activation(x)
    return torch_max_pool2d(x, 3, 2, name="stem_pool")


def stage_strides(stage: int, block: int) -> int:
    """Stride of block `block` of stage `stage` (both 1-based): 2 for the first block of
    stages 2-4, else 1."""
    return 2 if stage > 1 and block == 1 else 1


def symmetric_blocks(block: Callable[..., keras.layers.Layer], **options):
    """``make_block(filters, strides, name)`` (`single_conv_stages`): a `block` with `options`
    whose strided convolutions pad as PyTorch (``symmetric_padding=True``)."""

    def make_block(filters: int, strides: int, name: str) -> keras.layers.Layer:
        return block(filters, strides=strides, symmetric_padding=True, name=name, **options)

    return make_block


def single_conv_stages(x, blocks_per_stage, width_multiplier: float,
                       make_block: Callable[[int, int, str], keras.layers.Layer],
                       after_block: Callable | None = None):
    """Stages of single-binary-conv blocks: block b of stage s is
    ``make_block(filters, strides, name="stage{s}_block{b}")``, then
    ``after_block(x, name)`` when given (e.g. ReActNet's RPReLU)."""
    widths = stage_widths(STAGE_CHANNELS, width_multiplier)
    for stage, (blocks, filters) in enumerate(zip(blocks_per_stage, widths), start=1):
        for block in range(1, blocks + 1):
            name = f"stage{stage}_block{block}"
            x = make_block(filters, stage_strides(stage, block), name)(x)
            if after_block is not None:
                x = after_block(x, name)
    return x
