"""BNext (Guo, Bethge, Meinel, Yang, "Towards Optimization-Friendly Binary Neural Network",
TMLR 2023, arXiv 2211.12933; official code `hpi-xnor/BNext`, `src/bnext.py` and the 8-bit
`src/bnext_quant.py`): BNext-T, BNext-S, BNext-M and BNext-L. See docs/methods.md (section
'BNext') and docs/zoo.md."""

from __future__ import annotations

import keras

from kbnn.blocks import BNextBlock
from kbnn.blocks._common import batch_norm
from kbnn.layers.conv import QuantConv2D
from kbnn.layers.dense import QuantDense
from kbnn.quantizers._checks import check_bool
from kbnn.quantizers.fake_quant import FakeQuant

from ._common import (
    Application,
    ModelSpec,
    check_binary_options,
    global_average_pool,
    stage_widths,
)
from ._padding import _torch_pads, torch_conv2d

__all__ = ["BNEXT_CHANNELS", "BNextLarge", "BNextMiddle", "BNextSmall", "BNextTiny"]


def _widths(stem: int, stages: tuple) -> tuple:
    out = [stem]
    for width, depth in stages:
        out += [width] * depth
    return tuple(out)


# The official `stage_out_channel_*`: the stem's width, then the output width of every block.
# BNext-L is the 64-wide list (the one with the published 106 MiB model size); one version of
# `src/bnext.py` calls it "super" and keeps a 48-wide "large".
BNEXT_CHANNELS = {
    "tiny": _widths(32, ((64, 1), (128, 2), (256, 2), (512, 6), (1024, 2))),
    "small": _widths(48, ((96, 1), (192, 2), (384, 2), (768, 6), (1536, 2))),
    "middle": _widths(48, ((96, 1), (192, 4), (384, 4), (768, 8), (1536, 4))),
    "large": _widths(64, ((128, 1), (256, 4), (512, 4), (1024, 16), (2048, 4))),
}
_PRELU_INIT = 0.25  # nn.PReLU's default


@keras.saving.register_keras_serializable(package="kbnn.zoo")
class TorchPaddedBNextBlock(BNextBlock):
    """`kbnn.blocks.BNextBlock` whose strided 3x3 binary convolution pads as PyTorch does (one
    row/column on every side: `QuantConv2D(symmetric_padding=True)`) instead of TensorFlow's
    SAME (none before, one after on even sizes), so that official checkpoints compute the same.
    Stride-1 convolutions pad the same in both frameworks and are left as they are."""

    def build(self, input_shape):
        super().build(input_shape)
        conv = self.unit3x3.binary_conv
        if self.strides == 2 and conv.padding == "same":
            conv.symmetric_padding = True


def _eight_bit_kernel():
    return FakeQuant(num_bits=8, mode="minmax", symmetric=True, narrow_range=True)


def _check_bits(architecture: str, bits):
    if bits is not None and (isinstance(bits, bool) or bits != 8):
        raise ValueError(
            f"Invalid value for argument `bits` of {architecture}. Expected None (real-valued "
            "stem, SE branches and classifier, `src/bnext.py`) or 8 (the 8-bit variant, "
            f"`src/bnext_quant.py`). Received bits={bits!r}.")
    return bits


def _bnext(app: Application, size: str, *, width_multiplier, pad_values, input_quantizer,
           kernel_quantizer, elm_attention, info_recoupling, bits):
    architecture = app.spec.architecture
    width_multiplier, pad_values, _, _ = check_binary_options(
        architecture, width_multiplier, pad_values, input_quantizer, kernel_quantizer)
    elm_attention = check_bool(architecture, "elm_attention", elm_attention)
    info_recoupling = check_bool(architecture, "info_recoupling", info_recoupling)
    bits = _check_bits(architecture, bits)
    image = app.input()
    widths = stage_widths(BNEXT_CHANNELS[size], width_multiplier)

    # Stem: conv 3x3/2 (PyTorch padding 1) -> BN; the official PReLU after it is unused.
    if bits is None:
        x = torch_conv2d(image, widths[0], 3, 2, name="stem_conv")
    else:
        pads = tuple(_torch_pads(size, 3, 2) for size in image.shape[1:3])
        x = keras.layers.ZeroPadding2D(pads, name="stem_conv_pad")(image)
        x = QuantConv2D(widths[0], 3, strides=2, padding="valid", use_bias=False,
                        input_quantizer=FakeQuant(num_bits=bits),
                        kernel_quantizer=_eight_bit_kernel(), name="stem_conv")(x)
        # An int8 TFLite conv needs its output's range: a FakeQuant directly after the conv
        # (the official QuantizeConv leaves its output float; its BN follows).
        x = FakeQuant(num_bits=bits, name="stem_conv_quant")(x)
    x = batch_norm("stem_bn")(x)

    for i in range(1, len(widths)):
        # The official rules: stride 2 where the width changes, except into block 1's width;
        # mode "bias" for block 1, then "scale" for even i and "bias" for odd i.
        strides = 2 if widths[i] != widths[i - 1] and widths[i] != widths[1] else 1
        mode = "bias" if i == 1 or i % 2 else "scale"
        x = TorchPaddedBNextBlock(
            widths[i], strides=strides, mode=mode, elm_attention=elm_attention,
            info_recoupling=info_recoupling, pad_values=pad_values, se_bits=bits,
            input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
            name=f"block{i}")(x)

    x = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(_PRELU_INIT),
                           shared_axes=[1, 2], name="head_prelu")(x)
    if app.arguments["include_top"] and bits is not None:
        x = global_average_pool(x, "avg_pool")
        x = QuantDense(app.arguments["classes"], input_quantizer=FakeQuant(num_bits=bits),
                       kernel_quantizer=_eight_bit_kernel(), name="predictions")(x)
        # The logits' range, for an int8 FULLY_CONNECTED; then the classifier activation.
        x = FakeQuant(num_bits=bits, name="predictions_quant")(x)
        activation = app.arguments["classifier_activation"]
        if keras.activations.get(activation) is not keras.activations.linear:
            x = keras.layers.Activation(activation, name="predictions_activation")(x)
    else:
        x = app.top(x)
    return app.model(x)


_DOC = """Instantiates {title} (arXiv 2211.12933; official `hpi-xnor/BNext` `src/bnext.py`,
    size "{size}").

    Official layout: stem conv 3x3/2 (3 -> {c0}, padding 1) -> BN (no activation); blocks
    1..{n} (`kbnn.blocks.BNextBlock`) with output widths {widths} (stride 2 wherever the
    width changes, except into block 1's width; mode "bias" for block 1, then "scale" for even
    and "bias" for odd block indices). Each block: an ELM-Attention ("scale") or FFN 3x3
    ("bias") unit, then one FFN 1x1 unit, or two concatenated where the width doubles; every
    unit LearnableBias -> HardSign -> binary conv (temperature-annealed `bnext_weight`, no
    scale) -> BN -> PReLU with the info-recoupling SE gate. Head: PReLU -> global average
    pool -> Dense. The stem and the strided binary convs pad as PyTorch (one pixel on every
    side; `zoo/_padding.py` for the stem), so official checkpoints (`kbnn.zoo.load_torch_checkpoint`) compute the same. Figures: docs/zoo.md.

    The binary weights are binary only once their temperature tau < 1e-7
    (`kbnn.training.bnext.bnext_tau_schedule()`); convert after annealing.

    Layer names: "stem_conv_pad", "stem_conv", "stem_bn", "block{{i}}" (the official `feature[i]`;
    sub-layers "block{{i}}_attention" or "block{{i}}_ffn3x3", then "block{{i}}_ffn1x1" or
    "block{{i}}_ffn1x1_1/_2"), "head_prelu" (the official `prelu`), "avg_pool",
    "predictions" (`fc`).

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "{default}".
        width_multiplier: scales every width ({c0} * width_multiplier, rounded, then the
            official ratios); 1.0 is the published model.
        pad_values: SAME padding of the binarized inputs of the 3x3 convolutions: 0.0 (zeros,
            the official code) or 1.0 (+1, LCE's native "same-one").
        input_quantizer, kernel_quantizer: quantizers of every binary convolution (alias,
            config dict, `Quantizer` instance or None); default "hard_sign" and
            "bnext_weight".
        elm_attention, info_recoupling: the official ablation switches (`ELM_Attention`,
            `Infor_Recoupling`; both True in the published models).
        bits: None (real-valued stem, SE branches and classifier, `src/bnext.py`) or 8: the
            8-bit variant (`src/bnext_quant.py`): 8-bit `FakeQuant` on the stem conv, every SE
            branch and the classifier, which ``kbnn.converters.convert(model, int8=True)``
            turns into int8 ops. For int8 TFLite ops the stem conv's and the classifier's
            outputs are fake-quantized too ("stem_conv_quant" before "stem_bn";
            "predictions_quant" on the logits, then "predictions_activation" unless
            `classifier_activation` is None or linear), which the official code leaves float.

    Returns:
        A `keras.Model`.
    """


def _builder(size: str, architecture: str, default_name: str, title: str):
    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                width_multiplier=1.0, pad_values=0.0, input_quantizer="hard_sign",
                kernel_quantizer="bnext_weight", elm_attention=True, info_recoupling=True,
                bits=None):
        app = Application(ModelSpec(architecture, default_name), include_top, weights,
                          input_tensor, input_shape, pooling, classes, classifier_activation,
                          name)
        return _bnext(app, size, width_multiplier=width_multiplier, pad_values=pad_values,
                      input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
                      elm_attention=elm_attention, info_recoupling=info_recoupling, bits=bits)

    channels = BNEXT_CHANNELS[size]
    stages = []
    for width in dict.fromkeys(channels[1:]):
        count = channels[1:].count(width)
        stages.append(str(width) if count == 1 else f"{width} x {count}")
    builder.__name__ = builder.__qualname__ = architecture
    builder.__module__ = __name__
    builder.__doc__ = _DOC.format(title=title, size=size, c0=channels[0], n=len(channels) - 1,
                                  widths=", ".join(stages), default=default_name)
    return builder


BNextTiny = _builder("tiny", "BNextTiny", "bnext_tiny", "BNext-T")
BNextSmall = _builder("small", "BNextSmall", "bnext_small", "BNext-S")
BNextMiddle = _builder("middle", "BNextMiddle", "bnext_middle", "BNext-M")
BNextLarge = _builder("large", "BNextLarge", "bnext_large", "BNext-L")

# The official checkpoints' mapping (`kbnn.zoo.load_weights` with a .pth file), registered for
# the four architectures; numpy only.
from . import bnext_torch as _bnext_torch  # noqa: F401
