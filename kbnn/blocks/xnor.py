"""XNOR-Net block: BN -> sign -> binary convolution, with the optional activation scale K."""

from __future__ import annotations

import keras
from keras import ops

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
from kbnn.constraints import WeightClip
from kbnn.quantizers import xnor_activation_scale
from kbnn.quantizers._checks import check_bool

__all__ = ["XnorBlock"]


def _kernel_size(value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                             for v in pair):
        raise ValueError(
            "Invalid value for argument `kernel_size` of XnorBlock. Expected a strictly "
            f"positive integer or a pair of them. Received kernel_size={value!r}."
        )
    return pair


@keras.saving.register_keras_serializable(package="kbnn")
class XnorBlock(BinaryBlock):
    """XNOR-Net block (Rastegari, Ordonez, Redmon, Farhadi, "XNOR-Net: ImageNet Classification
    Using Binary Convolutional Neural Networks", arXiv 1603.05279; see docs/methods.md,
    section 'XNOR-Net'):

        out = BinConv_kxk,s( sign( BN(x) ) )              (activation_scale=False)
        out = BinConv_kxk,s( sign( BN(x) ) ) * K          (activation_scale=True)

    the official block order BN -> BinActiv -> BinConv. By default the sign is "ste_sign" (forward
    sign(0) = +1, gradient 1[|x| <= 1]); the kernel is `XnorWeight` ("xnor_weight": alpha_o *
    sign(W), alpha_o = mean|W_o| per output filter, gradient (1/n + alpha_o 1[|W| < 1])). The
    latent kernel is clipped to [-1, 1] after each update (`WeightClip(1)`), as the official code
    does; its per-iteration mean-centring over input channels is not reproduced. No bias.
    The latent kernel uses Keras' default init (glorot uniform), not the official code's
    He-normal fan-in init ``normal(0, sqrt(2 / (kh * kw * C_in)))``.

    With ``activation_scale=True`` the output is multiplied by the paper's ``K = A (*) k``
    (`kbnn.quantizers.xnor_activation_scale`): A = mean over channels of |BN(x)| (the input of
    the sign), k a (kh x kw) box filter of 1/(kh*kw), same stride and SAME zero padding as the
    conv (K is an approximation of the magnitudes, so it is zero-padded whatever `pad_values`
    says). The
    official code (allenai/XNOR-Net) omits K and uses only sign activations, hence the default
    False. K is a float computation (a 1-channel box-filter conv): it is not a binary op, and the
    published FLOP counts (and `kbnn.profile`) do not include it.

    Other quantizers (`input_quantizer`, `kernel_quantizer`) keep the block's layout and its
    `WeightClip(1)` kernel constraint. The BN precedes the conv, so `batch_norm_pairs()` is
    empty: nothing for the converter to fold into the conv.

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw), default 3.
        strides: 1 or 2.
        activation_scale: multiply by K (paper) or not (official code, default).
        pad_values: SAME padding of the binarized input: 0.0 pads with zeros, 1.0 pads with +1
            (LCE's native "same-one").
        symmetric_padding: False (default): TensorFlow's SAME padding of the kxk
            convolution, which for a stride-2 window on an even size pads 0 before and 1 after;
            True: PyTorch's padding=1 on both sides, as the official PyTorch code (what
            `kbnn.zoo` builds, so that PyTorch checkpoints compute the same windows).
        input_quantizer: quantizer of the convolution's input (alias, config dict, `Quantizer`
            instance, or None for a float input); default "ste_sign".
        kernel_quantizer: quantizer of its kernel (same forms); default "xnor_weight".
    """

    def __init__(self, filters: int, kernel_size: int | tuple[int, int] = 3, strides: int = 1,
                 activation_scale: bool = False, pad_values: float = 0.0, symmetric_padding: bool = False,
                 input_quantizer="ste_sign", kernel_quantizer="xnor_weight", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("XnorBlock", "filters", filters)
        self.kernel_size = _kernel_size(kernel_size)
        self.strides = check_strides("XnorBlock", strides)
        self.activation_scale = check_bool("XnorBlock", "activation_scale", activation_scale)
        self.pad_values = check_pad_values("XnorBlock", pad_values)
        self.symmetric_padding = check_symmetric_padding("XnorBlock", symmetric_padding)
        self._init_quantizers(input_quantizer, kernel_quantizer)

    def build(self, input_shape):
        self.bn = batch_norm(f"{self.name}_bn")
        self.conv = binary_conv(self.filters, self.kernel_size, self.strides,
                                self._input_quantizer_spec.new(),
                                self._kernel_quantizer_spec.new(), self.pad_values,
                                symmetric_padding=self.symmetric_padding,
                                name=f"{self.name}_conv", kernel_constraint=WeightClip(1.0))
        build_chain([self.bn, self.conv], input_shape)

    def _sublayers(self) -> list:
        return [self.bn, self.conv]

    def _output_channels(self, input_channels: int) -> int:
        return self.filters

    def call(self, inputs, training=None):
        x = self.bn(inputs, training=training)
        out = self.conv(x)
        if self.activation_scale:
            if self.symmetric_padding:  # zero-pad k // 2 on both sides, as the conv does
                kh, kw = self.conv.kernel_size
                x = ops.pad(x, [(0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
                out = out * xnor_activation_scale(x, self.kernel_size, self.strides, "valid")
            else:
                out = out * xnor_activation_scale(x, self.kernel_size, self.strides, "same")
        return out

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "activation_scale": self.activation_scale, "pad_values": self.pad_values,
                "symmetric_padding": self.symmetric_padding,
                **self._quantizer_config()}
