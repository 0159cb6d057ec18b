"""FusedBatchNormalization: Keras 3's BatchNormalization with TensorFlow's fused training kernel."""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["FusedBatchNormalization"]


@keras.saving.register_keras_serializable(package="kbnn")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (Ioffe & Szegedy, arXiv 1502.03167) whose training step
    runs TensorFlow's fused kernel (`FusedBatchNormV3`, the kernel tf_keras used with
    ``fused=True``) instead of Keras 3's separate moments + normalisation ops.

    Same arguments, variables and maths as the Keras layer: the batch statistics normalise the
    batch, and the moving statistics are updated with the (biased) batch variance, exactly as
    Keras 3 does. Only training calls on 4-D channels-last float32 inputs without mask, renorm
    or synchronisation take the fused path; every other call (inference included, so the
    exported graph and the converted flatbuffer are unchanged) is Keras' own.

    The kbnn blocks use it for their batch norms; in your own models it is a drop-in
    replacement for `keras.layers.BatchNormalization` that makes a training step cheaper on CPU.
    """

    def _fused(self, inputs, training, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else (
            self.axis[0] if len(self.axis) == 1 else None)
        return (bool(training) and self.trainable and mask is None and not self.renorm
                and not getattr(self, "synchronized", False)
                and keras.backend.backend() == "tensorflow"
                and len(inputs.shape) == 4 and axis in (-1, 3)
                and keras.backend.standardize_dtype(inputs.dtype) == "float32")

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.constant(1.0, inputs.dtype, (channels,))
        beta = self.beta if self.center else tf.constant(0.0, inputs.dtype, (channels,))
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta),
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The kernel returns the unbiased (Bessel-corrected) variance; Keras 3 moves the
        # moving variance towards the biased one. The factor is a constant when the shape is
        # static (the usual case: fewer ops to trace and run).
        static_count = inputs.shape[:-1].num_elements()
        if static_count is not None:
            variance = variance * ((static_count - 1.0) / max(static_count, 1.0))
        else:
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return outputs
