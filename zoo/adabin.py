"""AdaBin ResNet-18 (Tu, Chen, Ren, Wang, "AdaBin: Improving Binary Neural Networks with
Adaptive Binary Sets", arXiv 2208.08084), after the official `imagenet/nets/resnet18.py`. See
docs/methods.md (section 'AdaBin') and docs/zoo.md."""

from __future__ import annotations

from kbnn import layers as kl
from kbnn.blocks import AdaBinBlock
from kbnn.blocks._common import batch_norm

from ._common import Application, ModelSpec, check_block_options, stage_widths
from ._resnet import STAGE_CHANNELS, resnet_stem, single_conv_stages, symmetric_blocks

__all__ = ["AdaBinResNet18"]


def AdaBinResNet18(include_top=True, weights=None, input_tensor=None, input_shape=None,
                   pooling=None, classes=1000, classifier_activation="softmax", name=None, *,
                   width_multiplier=1.0, pad_values=0.0, activation_form="paper",
                   input_quantizer="adabin_activation", kernel_quantizer="adabin_weight"):
    """Instantiates AdaBin ResNet-18 (arXiv 2208.08084).

    Official layout: stem 7x7/2 conv -> BN -> Maxout -> 3x3/2 max-pool; stages of two basic
    blocks (64, 128, 256, 512 channels), each two `AdaBinBlock`s, i.e. a real shortcut and a
    Maxout around every binary convolution:

        Maxout( BN(AdaBinConv3x3(x)) + shortcut(x) )

    (shortcut AvgPool 2x2 -> real 1x1 conv -> BN where a block downsamples); global average
    pool -> BatchNormalization ("head_bn", the official `bn2`) -> Dense. The official module
    also creates a Maxout (`nonlinear2`) and a BatchNorm1d after the classifier (`bn3`) that
    its forward pass never uses; they are left out.

    Layer names: "stem_conv", "stem_bn", "stem_maxout", "stem_pool", "stage{s}_block{b}"
    (s = 1..4, b = 1..4, one per binary conv: the official `layer{s}[(b-1)//2].conv{(b-1)%2+1}`
    with its bn and nonlinear; sub-layers "..._conv", "..._bn", "..._shortcut",
    "..._maxout"), "avg_pool", "head_bn", "predictions". Figures: docs/zoo.md.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as keras.applications (see docs/zoo.md); the default
            name is "adabin_resnet18".
        width_multiplier: scales the stage widths (64 * width_multiplier, rounded, then x2,
            x4, x8); 1.0 is the published model.
        pad_values: SAME padding of the binarized activations: 0.0 (zeros, the official code)
            or 1.0 (the +1 level of the activation set, LCE's native "same-one").
        activation_form: "paper" (``alpha * sign(u) + beta``) or "code" (the official code's
            ``alpha * (sign(u) + beta)``; use it with ``pad_values=0.0`` for weights trained
            with the official code). See `kbnn.blocks.AdaBinBlock`.
        input_quantizer, kernel_quantizer: quantizers of every binary convolution; default
            "adabin_activation" and "adabin_weight".

    Returns:
        A `keras.Model`.
    """
    app = Application(ModelSpec("AdaBinResNet18", "adabin_resnet18"), include_top, weights,
                      input_tensor, input_shape, pooling, classes, classifier_activation, name)
    options = {"pad_values": pad_values, "activation_form": activation_form,
               "input_quantizer": input_quantizer, "kernel_quantizer": kernel_quantizer}
    width_multiplier = check_block_options(app.spec, width_multiplier, AdaBinBlock, **options)
    x = resnet_stem(app.input(), stage_widths(STAGE_CHANNELS, width_multiplier)[0],
                    activation=kl.Maxout(name="stem_maxout"))
    x = single_conv_stages(x, (4, 4, 4, 4), width_multiplier,
                           symmetric_blocks(AdaBinBlock, **options))
    x = app.top(x, before_classifier=lambda features: batch_norm("head_bn")(features))
    return app.model(x)
