"""Helpers shared by the converter tests (imported by the test modules).

The expected number of LceBconv2d ops is computed here by walking the model and reading each
layer's quantizer precisions, independently of the converter's own planning.
"""

import keras
import numpy as np

from kbnn.layers import QuantConv1D, QuantConv2D, QuantDense
from kbnn.quantizers import Quantizer

_LOWERABLE = (QuantConv1D, QuantConv2D, QuantDense)


def walk_binary_layers(model) -> list:
    """Conv/dense kbnn layers whose input and kernel quantizers are both 1-bit."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, _LOWERABLE):
            iq, kq = layer.input_quantizer, layer.kernel_quantizer
            if iq is not None and kq is not None and iq.precision == 1 and kq.precision == 1:
                found.append(layer)
    return found


def randomize_state(model, seed: int = 0) -> None:
    """Give BatchNorm statistics and quantizer variables (thresholds...) non-trivial values."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            for w in layer.weights:
                positive = "variance" in w.path or "gamma" in w.path
                value = rng.uniform(0.5, 1.5, w.shape) if positive else rng.normal(0, 0.3, w.shape)
                w.assign(value.astype("float32"))
        elif isinstance(layer, Quantizer):
            for w in layer.weights:
                w.assign((np.asarray(w) + rng.normal(0, 0.3, w.shape)).astype("float32"))


def bconv_count(flatbuffer: bytes) -> int:
    """LceBconv2d ops, read with TF's flatbuffer schema directly (not via kbnn.converters)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    codes = [c.customCode for c in model.operatorCodes]
    return sum(codes[op.opcodeIndex] in (b"LceBconv2d", "LceBconv2d")
               for op in model.subgraphs[0].operators)


def random_inputs(shape, n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, *shape)).astype("float32")


def seeded(seed: int = 1234) -> None:
    keras.utils.set_random_seed(seed)
    np.random.seed(seed)
