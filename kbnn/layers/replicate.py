"""RepBNN's channel replication ("RepBNN: towards a precise Binary Neural Network with Enhanced
Feature Map via Repeating", arXiv 2207.09049; see docs/methods.md, section
'RepBNN'): `ChannelReplicate`, the feature map tiled along the channel axis."""

from __future__ import annotations

import keras
from keras import ops

from kbnn.quantizers._checks import check_positive_int

__all__ = ["ChannelReplicate", "replicate_channels"]


def replicate_channels(x, beta: int):
    """`x` concatenated `beta` times along its last axis, ``[x, x, ..., x]`` (not interleaved:
    channel ``j`` of the output is channel ``j mod C`` of the input), as ``torch.repeat(1, beta,
    1, 1)`` in RepBNN's official code."""
    if beta == 1:
        return x
    return ops.tile(x, (1,) * (len(x.shape) - 1) + (beta,))


@keras.saving.register_keras_serializable(package="kbnn")
class ChannelReplicate(keras.layers.Layer):
    """RepBNN's channel replication (arXiv 2207.09049; see docs/methods.md, section 'RepBNN'):
    the input tiled `beta` times along the last (channel) axis, ``[x, x, ..., x]``, so a map
    of C channels becomes one of ``beta * C`` channels at no binary cost. RepBNN widens every
    feature map this way; e.g. its stem output is tiled twice.

    A binary convolution followed by the replication is ``QuantConv2D(C, ..., replicate=beta)``
    (one `LceBconv2d` of C output channels, then the tile). On its own the layer exports as one
    TFLite `TILE` op.

    Args:
        beta: the replication factor (an integer >= 1).
    """

    def __init__(self, beta: int, **kwargs):
        super().__init__(**kwargs)
        self.beta = check_positive_int("ChannelReplicate", "beta", beta)

    def call(self, inputs):
        return replicate_channels(inputs, self.beta)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        last = None if shape[-1] is None else shape[-1] * self.beta
        return (*shape[:-1], last)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
