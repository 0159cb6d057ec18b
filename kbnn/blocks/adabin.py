"""AdaBin block: adaptive binary sets, BN, real shortcut and Maxout."""

from __future__ import annotations

import keras

from kbnn import layers as kl
from kbnn import quantizers as kq
from kbnn.blocks._common import (
    BinaryBlock,
    batch_norm,
    binary_conv,
    build_chain,
    check_pad_values,
    check_positive_int,
    check_strides,
    check_symmetric_padding,
)
from kbnn.blocks.shortcut import AvgPoolShortcut

__all__ = ["AdaBinBlock"]


@keras.saving.register_keras_serializable(package="kbnn")
class AdaBinBlock(BinaryBlock):
    """AdaBin block (Tu, Chen, Ren, Wang, "AdaBin: Improving Binary Neural Networks with
    Adaptive Binary Sets", arXiv 2208.08084; see docs/methods.md, section 'AdaBin'; after the
    official `imagenet/nets/resnet18.py`):

        out = Maxout( BN(AdaBinConv3x3_s(x)) + shortcut(x) )

    AdaBinConv is a `QuantConv2D`, by default with input quantizer "adabin_activation"
    (`AdaBinActivation`: learnable scalar alpha, beta; the set {beta - alpha, beta + alpha})
    and kernel quantizer "adabin_weight" (`AdaBinWeight`: per output channel centre = mean,
    half-distance = population std). No bias. The official ResNet-18 BasicBlock is two of these blocks (a
    shortcut around each conv, Bi-Real style). The shortcut is the identity, or
    `AvgPoolShortcut` (AvgPool 2x2 -> real 1x1 conv -> BN) when the block changes the
    resolution or the width. Latent kernels start from normal(0, sqrt(2 / (k*k*C_out))), the
    official init. `batch_norm_pairs()` lists (conv, bn) when the conv is binary: the
    converter folds that BN into the conv's export (with its correction terms).

    `activation_form` applies to an `AdaBinActivation` input quantizer: the alias
    "adabin_activation" (the default) becomes ``AdaBinActivation(form=activation_form)``; an
    `AdaBinActivation` given as an instance or config must have that same form. With any other
    input quantizer `activation_form` must stay "paper" (it means nothing there); with
    ``input_quantizer=None`` (a float input, e.g. a float twin built from the config) it is
    ignored.

    Args:
        filters: output channels.
        strides: 1 or 2.
        pad_values: SAME padding of the binarized activation. 0.0 pads with zeros, as the
            official code does; the converter then adds a constant border-correction map. 1.0
            pads with the +1 level of the activation set, which LCE runs natively
            ("same-one"): the faster export.
        activation_form: "paper" (default, ``alpha * sign(u) + beta``) or "code" (the
            official code's ``alpha * (sign(u) + beta)``); see `AdaBinActivation`. To
            reproduce weights trained with the official code use ``activation_form="code"``
            and ``pad_values=0.0``.
        symmetric_padding: False (default): TensorFlow's SAME padding of the 3x3
            convolution, which for a stride-2 window on an even size pads 0 before and 1 after;
            True: PyTorch's padding=1 on both sides, as the official PyTorch code (what
            `kbnn.zoo` builds, so that PyTorch checkpoints compute the same windows).
        input_quantizer: quantizer of the convolution's input (alias, config dict, `Quantizer`
            instance, or None for a float input); default "adabin_activation".
        kernel_quantizer: quantizer of its kernel (same forms); default "adabin_weight".
    """

    def __init__(self, filters: int, strides: int = 1, pad_values: float = 0.0, symmetric_padding: bool = False,
                 activation_form: str = "paper", input_quantizer="adabin_activation",
                 kernel_quantizer="adabin_weight", **kwargs):
        super().__init__(**kwargs)
        if activation_form not in kq.AdaBinActivation.FORMS:
            raise ValueError(
                "Invalid value for argument `activation_form` of AdaBinBlock. Expected one of "
                f"{kq.AdaBinActivation.FORMS}. Received activation_form={activation_form!r}."
            )
        self.activation_form = activation_form
        self.filters = check_positive_int("AdaBinBlock", "filters", filters)
        self.strides = check_strides("AdaBinBlock", strides)
        self.pad_values = check_pad_values("AdaBinBlock", pad_values)
        self.symmetric_padding = check_symmetric_padding("AdaBinBlock", symmetric_padding)
        if isinstance(input_quantizer, str) and input_quantizer == "adabin_activation":
            input_quantizer = {"class_name": "AdaBinActivation",
                               "config": {"form": activation_form}}
        self._init_quantizers(input_quantizer, kernel_quantizer)
        self._check_activation_form(input_quantizer)

    def _check_activation_form(self, input_quantizer) -> None:
        spec = self._input_quantizer_spec
        if spec.cls is not None and issubclass(spec.cls, kq.AdaBinActivation):
            form = spec.config().get("form", "paper")
            if form != self.activation_form:
                raise ValueError(
                    "Invalid value for argument `input_quantizer` of AdaBinBlock. Expected an "
                    f"AdaBinActivation of form {self.activation_form!r} (the block's "
                    f"`activation_form`), or the alias 'adabin_activation'. Received "
                    f"input_quantizer={input_quantizer!r} of form {form!r}."
                )
        elif spec.cls is not None and self.activation_form != "paper":
            raise ValueError(
                "Invalid value for argument `activation_form` of AdaBinBlock. Expected 'paper' "
                "(the default) when the input quantizer is not an AdaBinActivation: the form "
                "only applies to AdaBin's activation set. Received "
                f"activation_form={self.activation_form!r} with "
                f"input_quantizer={input_quantizer!r}."
            )

    def build(self, input_shape):
        channels = input_shape[-1]
        init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
        self.conv = binary_conv(self.filters, 3, self.strides, self._input_quantizer_spec.new(),
                                self._kernel_quantizer_spec.new(), self.pad_values,
                                symmetric_padding=self.symmetric_padding,
                                name=f"{self.name}_conv", kernel_initializer=init)
        self.bn = batch_norm(f"{self.name}_bn")
        self.shortcut = (AvgPoolShortcut(self.filters, self.strides, name=f"{self.name}_shortcut")
                         if self.strides != 1 or channels != self.filters else None)
        self.maxout = kl.Maxout(name=f"{self.name}_maxout")
        build_chain([self.conv, self.bn, self.maxout], input_shape)
        build_chain([self.shortcut], input_shape)

    def _sublayers(self) -> list:
        return [self.conv, self.bn, self.shortcut, self.maxout]

    def _conv_batch_norms(self) -> list[tuple]:
        return [(self.conv, self.bn)]

    def _output_channels(self, input_channels: int) -> int:
        return self.filters

    def call(self, inputs, training=None):
        out = self._conv_bn(self.conv, self.bn, inputs, training)
        shortcut = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return self.maxout(out + shortcut)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "pad_values": self.pad_values,
                "symmetric_padding": self.symmetric_padding, "activation_form": self.activation_form,
                **self._quantizer_config()}
