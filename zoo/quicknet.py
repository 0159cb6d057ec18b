"""QuickNet family (larq-zoo's `sota` models), designed for fast inference with Larq Compute
Engine: Bannink et al., "Larq Compute Engine: Design, Benchmark, and Deploy State-of-the-Art
Binarized Neural Networks", arXiv 2011.09398; architecture and pre-trained weights in larq-zoo
(`larq_zoo.sota.QuickNetSmall / QuickNet / QuickNetLarge`, v1.0). See docs/zoo.md.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from kbnn import constraints as kc
from kbnn.layers import QuantConv2D

from ._common import Application, ModelSpec, check_binary_options, stage_widths

__all__ = ["BlurPoolInitializer", "QuickNet", "QuickNetLarge", "QuickNetSmall"]

# (blocks per stage, channels per stage), as larq-zoo's `section_blocks` / `section_filters`.
SPECS = {
    "QuickNetSmall": ((4, 4, 4, 4), (32, 64, 256, 512), "quicknet_small"),
    "QuickNet": ((4, 4, 4, 4), (64, 128, 256, 512), "quicknet"),
    "QuickNetLarge": ((6, 8, 12, 6), (64, 128, 256, 512), "quicknet_large"),
}
CLIP_VALUE = 1.25  # larq-zoo: SteSign(clip_value=1.25) and WeightClip(1.25)
# The BN of the blocks and transitions; the stem keeps Keras' defaults, as larq-zoo.
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def _binomial(n: int) -> np.ndarray:
    row = np.array([1.0])
    for _ in range(n - 1):
        row = np.convolve(row, [1.0, 1.0])
    return row


@keras.saving.register_keras_serializable(package="kbnn")
class BlurPoolInitializer(keras.initializers.Initializer):
    """The fixed anti-aliasing filter of QuickNet's transition blocks (Zhang, "Making
    Convolutional Networks Shift-Invariant Again", arXiv 1904.11486): the normalised outer
    product of binomial rows over the first two axes (3x3: [1, 2, 1] x [1, 2, 1] / 16), the
    same for every index of the other axes (every channel of a depthwise kernel)."""

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) == 1:
            kernel = _binomial(shape[0])
        else:
            kernel = np.outer(_binomial(shape[0]), _binomial(shape[1]))
            kernel = kernel.reshape(shape[:2] + (1,) * (len(shape) - 2))
        kernel = kernel / kernel.sum()
        dtype = dtype or keras.config.floatx()
        return ops.cast(np.broadcast_to(kernel, shape).copy(), dtype)

    def get_config(self):
        return {}


def _min_size(transitions: int) -> int:
    """The smallest input size for which every transition's 2x2 stride-1 VALID max-pool still
    has an input of at least 2x2."""
    for size in range(1, 1024):
        m = math.ceil(math.ceil(size / 2) / 2)  # stem: two stride-2 SAME layers
        ok = True
        for _ in range(transitions):
            if m < 2:
                ok = False
                break
            m = math.ceil((m - 1) / 2)  # VALID 2x2/1 max-pool, then SAME stride 2
        if ok:
            return size
    raise AssertionError("unreachable")


def _stem(x, filters: int):
    """Float stem (larq-zoo `stem_module`): 3x3/2 conv to filters/4 -> BN -> ReLU ->
    depthwise 3x3/2 -> BN (no scale/centre) -> 1x1 conv -> BN; the BNs keep Keras' defaults."""
    x = keras.layers.Conv2D(filters // 4, 3, strides=2, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="stem_conv")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                     name="stem_depthwise")(x)
    x = keras.layers.BatchNormalization(scale=False, center=False, name="stem_depthwise_bn")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal",
                            name="stem_pointwise")(x)
    return keras.layers.BatchNormalization(name="stem_pointwise_bn")(x)


def _transition(x, filters: int, prefix: str):
    """Transition (larq-zoo `transition_block`): ReLU -> 2x2 stride-1 max-pool -> fixed
    blur-pool (depthwise 3x3/2, not trainable) -> float 1x1 conv -> BN."""
    x = keras.layers.Activation("relu", name=f"{prefix}_relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=2, strides=1, name=f"{prefix}_maxpool")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                     depthwise_initializer=BlurPoolInitializer(),
                                     trainable=False, name=f"{prefix}_blurpool")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="glorot_normal",
                            name=f"{prefix}_conv")(x)
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                           name=f"{prefix}_bn")(x)


def _residual(x, prefix: str, input_quantizer, kernel_quantizer, kernel_constraint,
              pad_values: float):
    """Residual block (larq-zoo `residual_block`): binary 3x3 conv (same width, SAME padding
    with `pad_values`) with a fused ReLU -> BN -> + x."""
    y = QuantConv2D(int(x.shape[-1]), 3, padding="same", pad_values=pad_values, use_bias=False,
                    activation="relu",
                    input_quantizer=input_quantizer.new(name=f"{prefix}_conv_input_quantizer"),
                    kernel_quantizer=kernel_quantizer.new(name=f"{prefix}_conv_kernel_quantizer"),
                    kernel_constraint=kernel_constraint, kernel_initializer="glorot_normal",
                    name=f"{prefix}_conv")(x)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{prefix}_bn")(y)
    return keras.layers.Add(name=f"{prefix}_add")([y, x])


def _quicknet(app: Application, section_blocks, section_filters, width_multiplier,
              input_quantizer, kernel_quantizer, kernel_constraint, pad_values):
    architecture = app.spec.architecture
    width_multiplier, pad_values, input_quantizer, kernel_quantizer = check_binary_options(
        architecture, width_multiplier, pad_values, input_quantizer, kernel_quantizer)
    try:
        kernel_constraint = kc.get(kernel_constraint)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Invalid value for argument `kernel_constraint` of {architecture}. Expected a "
            f"Keras constraint identifier or None. Received kernel_constraint="
            f"{kernel_constraint!r} ({err}).") from None
    image = app.input()
    widths = stage_widths(section_filters, width_multiplier, multiple=4)

    x = _stem(image, widths[0])
    for stage, (blocks, filters) in enumerate(zip(section_blocks, widths), start=1):
        for block in range(1, blocks + 1):
            if filters != x.shape[-1]:
                x = _transition(x, filters, f"stage{stage}_transition")
            x = _residual(x, f"stage{stage}_block{block}", input_quantizer, kernel_quantizer,
                          kernel_constraint, pad_values)

    if app.arguments["include_top"]:
        x = keras.layers.Activation("relu", name="head_relu")(x)
    return app.model(app.top(x, kernel_initializer="glorot_normal"))


_DEFAULT_QUANTIZER = {"class_name": "SteSign", "config": {"clip_value": CLIP_VALUE}}
_DEFAULT_CONSTRAINT = kc.WeightClip(CLIP_VALUE)

_DOC = """Instantiates the {architecture} architecture (larq-zoo `sota.{architecture}`, v1.0).

    Bannink et al., "Larq Compute Engine: Design, Benchmark, and Deploy State-of-the-Art
    Binarized Neural Networks", arXiv 2011.09398; larq-zoo. Stages of {blocks} residual blocks
    with {filters} channels. Layer names, figures and pre-trained weights: docs/zoo.md.

    The structure follows larq-zoo exactly (parameter count {params:,} at 224x224x3 with 1000
    classes, the same as larq-zoo's `model.count_params()`):

    * stem (float): 3x3/2 conv to C/4 channels -> BN -> ReLU -> depthwise 3x3/2 -> BN (no
      scale or centre) -> 1x1 conv to C -> BN (the stem BNs keep Keras' defaults);
    * residual block (binary): 3x3 conv, SteSign(clip 1.25) on input and kernel,
      WeightClip(1.25), SAME padding with +1 (`pad_values=1.0`), fused ReLU -> BN -> + input;
    * transition before each wider stage (float): ReLU -> 2x2 stride-1 max-pool -> fixed
      blur-pool (depthwise 3x3/2, `BlurPoolInitializer`, not trainable) -> 1x1 conv -> BN;
    * head: ReLU -> global average pool (AveragePooling2D + Flatten) -> Dense.

    Args:
        include_top: whether to include the ReLU, pooling and classifier at the top.
        weights: None (random initialization), the name of a pre-trained set known to the
            weights registry (e.g. "imagenet"), or the path to a weights file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional (height, width, channels); with `include_top` it must be static.
            At least {min_size}x{min_size} (the transitions' VALID 2x2 max-pools).
        pooling: with ``include_top=False``: None (4-D features), "avg" or "max".
        classes: number of classes (1000 with pre-trained ImageNet weights).
        classifier_activation: activation of the "predictions" layer (None for logits).
        name: model name (default "{default_name}").
        width_multiplier: scales every stage width (the first one rounded to a multiple of 4);
            1.0 is the published model. Narrow variants (e.g. 0.25) for tests and small data.
        input_quantizer, kernel_quantizer: quantizers of every binary convolution (alias,
            config dict, `Quantizer` instance, or None); default SteSign(clip_value=1.25).
        kernel_constraint: constraint of the binary kernels (a Keras constraint identifier,
            or None for none); default WeightClip(1.25).
        pad_values: SAME padding of the binary convolutions' binarized input: 1.0 (larq-zoo,
            LCE's native "same-one") or 0.0.

    Returns:
        A `keras.Model`.
    """


def _builder(architecture: str):
    section_blocks, section_filters, default_name = SPECS[architecture]
    spec = ModelSpec(architecture, default_name, min_size=_min_size(len(section_blocks) - 1))

    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                width_multiplier=1.0, input_quantizer=_DEFAULT_QUANTIZER,
                kernel_quantizer=_DEFAULT_QUANTIZER, kernel_constraint=_DEFAULT_CONSTRAINT,
                pad_values=1.0):
        app = Application(spec, include_top, weights, input_tensor, input_shape, pooling,
                          classes, classifier_activation, name)
        return _quicknet(app, section_blocks, section_filters, width_multiplier,
                         input_quantizer, kernel_quantizer, kernel_constraint, pad_values)

    builder.__name__ = builder.__qualname__ = architecture
    builder.__module__ = __name__
    builder.__doc__ = _DOC.format(architecture=architecture, blocks=section_blocks,
                                  filters=section_filters, params=_PARAMS[architecture],
                                  min_size=spec.min_size, default_name=default_name)
    return builder


_PARAMS = {"QuickNetSmall": 12_664_344, "QuickNet": 13_243_720, "QuickNetLarge": 23_359_304}
QuickNetSmall = _builder("QuickNetSmall")
QuickNet = _builder("QuickNet")
QuickNetLarge = _builder("QuickNetLarge")
