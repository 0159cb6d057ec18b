"""QuantDense: a Keras Dense layer with quantized input and kernel."""

from __future__ import annotations

import keras
from keras import ops

from kbnn.layers.base import QuantizedLayerMixin, validate_size_argument
from kbnn.layers.export import BinaryConvForm, register_export_form

__all__ = ["QuantDense"]


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDense(QuantizedLayerMixin, keras.layers.Dense):
    """Fully connected layer with quantized input and kernel (BinaryNet, arXiv 1602.02830).

    Args:
        units: output size.
        input_quantizer: quantizer of the input (alias, config, instance or None).
        kernel_quantizer: quantizer of the kernel (per output unit = last axis).
        **kwargs: every argument of `keras.layers.Dense`.

    A binary QuantDense converts to an LCE 1x1 binary convolution (there is no binary
    fully-connected op in LCE); see `kbnn.converters`.
    """

    def __init__(self, units, *args, input_quantizer=None, kernel_quantizer=None, **kwargs):
        units = validate_size_argument(type(self).__name__, "units", units)
        super().__init__(units, *args, **kwargs)
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)

    def call(self, inputs, training=None):
        # keras.layers.Dense.call multiplies by `self.kernel` directly (no seam).
        x = self.quantize_input(inputs)
        kernel = self.quantize_weight("kernel_quantizer", self.kernel)
        return self._finish(ops.matmul(x, kernel))

    def get_config(self):
        # keras.layers.Dense leaves these constructor arguments out of its config.
        return {
            **super().get_config(),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
        }


@register_export_form(QuantDense)
def dense_export_form(layer) -> BinaryConvForm:
    """Export form of `QuantDense`: every input position a row of one 1x1 binary conv."""
    return BinaryConvForm(
        input_quantizer=layer.input_quantizer,
        kernel=layer.quantized_weights()["kernel_quantizer"],
        layout="dense",
        bias=layer.bias if layer.use_bias else None,
        activation=layer.activation,
    )
