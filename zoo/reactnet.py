"""ReActNet (Liu, Shen, Savvides, Cheng, "ReActNet: Towards Precise Binary Neural Network with
Generalized Activation Functions", arXiv 2003.03488): ReActNet-A (MobileNetV1-derived, official
`mobilenet/2_step2/reactnet.py`), its RepBNN form (arXiv 2207.09049, official
imfinethanks/Rep_AdamBNN `step2/reactnet.py`) and ReActNet on the Bi-Real-18 base (official
`resnet/2_step2/birealnet.py`). See docs/methods.md (sections 'ReActNet', 'RepBNN') and
docs/zoo.md."""

from __future__ import annotations

from kbnn import layers as kl
from kbnn.blocks import ReActNetBlock
from kbnn.blocks._common import batch_norm

from ._common import Application, ModelSpec, check_binary_options, stage_widths
from ._padding import torch_conv2d
from .bireal import bireal_resnet

__all__ = ["ReActNetA", "ReActNetResNet18", "RepReActNetA"]

# The official `stage_out_channel`: the stem's width, then the output width of blocks 1-13.
REACTNET_A_CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
# RepBNN's replication factor beta in RepReActNet-A (every binary conv), and the stem's tiling.
REP_BETA = 4
REP_STEM_REPLICATE = 2


def ReActNetA(include_top=True, weights=None, input_tensor=None, input_shape=None,
              pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
              width_multiplier=1.0, pad_values=0.0, input_quantizer="rsign",
              kernel_quantizer="scaled_sign"):
    """Instantiates ReActNet-A (arXiv 2003.03488), the MobileNetV1-derived binary network.

    Official layout: stem 3x3/2 real conv (3 -> 32) -> BN (no activation); 13
    `ReActNetBlock`s with output widths 64, 128, 128, 256, 256, 512 x 6, 1024, 1024 (stride 2
    wherever the width changes, except into 64): RSign -> binary 3x3 conv -> BN -> + (pooled)
    input -> RPReLU -> RSign -> binary 1x1 conv(s) -> BN -> + shortcut -> RPReLU, the
    channel-doubling blocks with two 1x1 convolutions concatenated; global average pool ->
    Dense. 29,343,592 trainable parameters, 4.82e9 BOPs, 0.87e8 OPs at 224x224 (docs/zoo.md).

    Layer names: "stem_conv", "stem_bn", "block{i}" (i = 1..13, the official `feature[i]`; the
    block's sub-layers are "block{i}_conv3x3", "block{i}_bn3x3", "block{i}_rprelu1",
    "block{i}_conv1x1" or "block{i}_conv1x1_a/_b", ...), "avg_pool", "predictions".

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "reactnet_a".
        width_multiplier: scales every width (32 * width_multiplier, rounded, then the
            official ratios); 1.0 is the published model.
        pad_values: SAME padding of the binarized inputs of the 3x3 convolutions: 0.0 (zeros,
            the official code) or 1.0 (+1, LCE's native "same-one").
        input_quantizer, kernel_quantizer: quantizers of every binary convolution (see
            `kbnn.blocks.ReActNetBlock`); default "rsign" and "scaled_sign".
            ``kernel_quantizer=None`` gives the official first training step (binary
            activations, real weights).

    Returns:
        A `keras.Model`.
    """
    app = Application(ModelSpec("ReActNetA", "reactnet_a"), include_top, weights, input_tensor,
                      input_shape, pooling, classes, classifier_activation, name)
    return _reactnet_a(app, width_multiplier, pad_values, input_quantizer, kernel_quantizer)


def _reactnet_a(app: Application, width_multiplier, pad_values, input_quantizer,
                kernel_quantizer, *, multiple=1, stem_replicate=1, widen=1, replicate=1):
    """ReActNet-A, the model of `app`: the options checked (`check_binary_options`), the stem
    and the 13 blocks with the official `stage_out_channel` scaled (the stem's width rounded to
    a multiple of `multiple`), the head. RepBNN: the stem output tiled `stem_replicate` times,
    every block `widen` times wider, its binary convs with `replicate`."""
    width_multiplier, pad_values, _, _ = check_binary_options(
        app.spec.architecture, width_multiplier, pad_values, input_quantizer, kernel_quantizer)
    image = app.input()
    widths = stage_widths(REACTNET_A_CHANNELS, width_multiplier, multiple=multiple)
    # PyTorch's padding=1 on both sides (the official firstconv3x3), not TensorFlow's SAME.
    x = torch_conv2d(image, widths[0], 3, 2, name="stem_conv")
    x = batch_norm("stem_bn")(x)
    if stem_replicate > 1:
        x = kl.ChannelReplicate(stem_replicate, name="stem_replicate")(x)
    for i in range(1, len(widths)):
        # The official rule: stride 2 where the width changes, except into the first block.
        strides = 2 if widths[i] != widths[i - 1] and i != 1 else 1
        x = ReActNetBlock(widen * widths[i], strides=strides, pad_values=pad_values,
                          symmetric_padding=True,
                          input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
                          replicate=replicate, name=f"block{i}")(x)
    return app.model(app.top(x))


def RepReActNetA(include_top=True, weights=None, input_tensor=None, input_shape=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                 width_multiplier=1.0, pad_values=0.0, input_quantizer="rsign",
                 kernel_quantizer="scaled_sign"):
    """Instantiates RepReActNet-A: ReActNet-A with RepBNN's channel replication ("RepBNN: towards a precise Binary Neural Network with Enhanced Feature Map via Repeating",
    arXiv 2207.09049; official imfinethanks/Rep_AdamBNN `step2/reactnet.py`).

    ReActNet-A (`ReActNetA`) with every feature map twice as wide at the same binary cost,
    replication factor beta = 4: the stem (3x3/2 real conv 3 -> 32, BN) is tiled twice
    (32 -> 64 channels, "stem_replicate"); in each of the 13 `ReActNetBlock`s (with
    ``replicate=4``) every binary conv maps the block's 2C input channels to C/2 outputs (C:
    ReActNet-A's width there), tiled four times, ``[y, y, y, y]``, back to 2C before its BN,
    so BN, RSign thresholds, RPReLU and shortcuts have twice ReActNet-A's widths; the
    channel-doubling blocks concatenate two such 1x1 convs; global average pool -> Dense
    2048 -> classes. Binary parameters and BOPs are ReActNet-A's (28,253,184 and 4.82e9),
    FLOPs 1.29e7 (the classifier doubles), OPs 0.88e8 at 224x224 (published: 0.88e8, 71.34%
    top-1 with AdamBNN training; figures in docs/zoo.md). Each binary conv converts to one
    `LceBconv2d` of C/2 channels followed by a TILE.

    Layer names: those of `ReActNetA` plus "stem_replicate" ("stem_conv", "stem_bn",
    "stem_replicate", "block{i}" for the official `feature[i]`, "avg_pool", "predictions").

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "rep_reactnet_a".
        width_multiplier: scales every width as in `ReActNetA` (the stem's 32 *
            width_multiplier is rounded to an even number, at least 2, so that every conv's
            C/2 outputs are whole); 1.0 is the published model.
        pad_values, input_quantizer, kernel_quantizer: as `ReActNetA`.

    Returns:
        A `keras.Model`.
    """
    app = Application(ModelSpec("RepReActNetA", "rep_reactnet_a"), include_top, weights,
                      input_tensor, input_shape, pooling, classes, classifier_activation, name)
    # An even stem width: the blocks' 2C inputs are then multiples of beta = 4.
    return _reactnet_a(app, width_multiplier, pad_values, input_quantizer, kernel_quantizer,
                       multiple=2, stem_replicate=REP_STEM_REPLICATE, widen=REP_STEM_REPLICATE,
                       replicate=REP_BETA)


def ReActNetResNet18(include_top=True, weights=None, input_tensor=None, input_shape=None,
                     pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                     width_multiplier=1.0, pad_values=0.0, input_quantizer="rsign",
                     kernel_quantizer="scaled_sign"):
    """Instantiates ReActNet on the Bi-Real-18 base (arXiv 2003.03488, official
    `resnet/2_step2/birealnet.py`).

    Bi-Real Net-18's layout (stem 7x7/2 conv -> BN -> 3x3/2 max-pool; stages of 4 blocks with
    64, 128, 256, 512 channels; a real shortcut around every binary conv, AvgPool 2x2 -> real
    1x1 conv -> BN where a block downsamples) with ReActNet's generalized activations: each
    block is `BiRealBlock` with RSign inputs and ScaledSign kernels, followed by an `RPReLU`:

        RPReLU( BN(BinConv3x3(RSign(x))) + shortcut(x) )

    Layer names: "stem_conv", "stem_bn", "stem_pool", "stage{s}_block{b}" (s = 1..4, b = 1..4;
    the official `layer{s}[b-1]`; sub-layers "..._conv", "..._bn", "..._shortcut"),
    "stage{s}_block{b}_rprelu" (the official move1 -> prelu -> move2), "avg_pool",
    "predictions". Figures: docs/zoo.md.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "reactnet_resnet18".
        width_multiplier: scales the stage widths (64 * width_multiplier, rounded, then x2,
            x4, x8); 1.0 is the published model.
        pad_values: SAME padding of the binarized inputs: 0.0 (zeros, the official code) or
            1.0 (+1, LCE's native "same-one").
        input_quantizer, kernel_quantizer: quantizers of every binary convolution (alias,
            config dict, `Quantizer` instance or None); default "rsign" and "scaled_sign".
            Methods that keep this network and change the binarizers (e.g. ReBNN, RBONN, ReCU
            in their ReActNet-18 setting) pass theirs here.

    Returns:
        A `keras.Model`.
    """
    app = Application(ModelSpec("ReActNetResNet18", "reactnet_resnet18"), include_top, weights,
                      input_tensor, input_shape, pooling, classes, classifier_activation, name)

    def rprelu(y, block_name):
        return kl.RPReLU(name=f"{block_name}_rprelu")(y)

    return bireal_resnet(app, (4, 4, 4, 4), width_multiplier, pad_values, input_quantizer,
                         kernel_quantizer, after_block=rprelu)
