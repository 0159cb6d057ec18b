"""kbnn_apps.bench: the float twin of a binary model, float TFLite conversion, latency timing."""

import keras
import numpy as np
import pytest

from kbnn import quantizers as kbnn_quantizers
from kbnn.layers import QuantConv2D, QuantDense
from kbnn_apps.bench import (
    BenchRow,
    Latency,
    bench,
    bench_table,
    float_tflite,
    float_twin,
    measure_latency,
)


def _conv_same_3x3(x, w):
    """Naive NHWC 3x3 convolution with zero SAME padding (numpy reference)."""
    n, h, wd, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[-1]), np.float64)
    for i in range(h):
        for j in range(wd):
            patch = padded[:, i:i + 3, j:j + 3, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def _binary_model():
    inputs = keras.Input((5, 5, 3))
    x = QuantConv2D(4, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", use_bias=True, name="bconv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                         name="bdense")(x)
    return keras.Model(inputs, outputs)


def test_float_twin_is_the_same_network_without_quantizers(rng):
    model = _binary_model()
    model.get_layer("bconv").bias.assign(np.array([0.5, -1.0, 0.0, 2.0], np.float32))
    twin = float_twin(model)
    assert [type(layer).__name__ for layer in twin.layers] == \
        [type(layer).__name__ for layer in model.layers]
    for layer in twin.layers:
        if hasattr(layer, "quantizers"):
            assert layer.quantizers == {}
    assert twin.get_layer("bconv").pad_values == 0.0
    x = rng.uniform(-1, 1, (3, 5, 5, 3)).astype(np.float32)
    w = model.get_layer("bconv").kernel.numpy().astype(np.float64)
    b = model.get_layer("bconv").bias.numpy()
    dense = model.get_layer("bdense")
    hidden = (_conv_same_3x3(x.astype(np.float64), w) + b).reshape(3, -1)
    expected = hidden @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(np.asarray(twin(x)), expected, rtol=1e-4, atol=1e-4)
    # The original model is untouched (still binary: its output differs from the float one).
    assert not np.allclose(np.asarray(model(x)), expected, atol=1e-3)


def _twin_layers(twin):
    from kbnn._keras_compat import flatten_layers

    return flatten_layers(twin, include_self=False, recursive=True)


def test_float_twin_is_rebuilt_from_configs_without_patching_calls(rng):
    # A nested model (its config holds the QuantConv2D config) and a quantizer used as a layer
    # of its own; RSign has a learned threshold, which the twin drops.
    from kbnn.quantizers import Quantizer

    inner = keras.Sequential([keras.Input((5, 5, 3)),
                              QuantConv2D(4, 3, padding="same", pad_values=1.0,
                                          input_quantizer="rsign", kernel_quantizer="ste_sign",
                                          name="inner_bconv")], name="inner")
    inputs = keras.Input((5, 5, 3))
    sign = kbnn_quantizers.get("rsign")  # a layer of its own in the model
    outputs = keras.layers.Flatten()(inner(sign(inputs)))
    model = keras.Model(inputs, outputs)
    twin = float_twin(model)
    layers = _twin_layers(twin)
    assert not any(isinstance(layer, Quantizer) for layer in layers)
    assert not any("call" in vars(layer) for layer in layers)  # no instance-level patching
    assert isinstance(twin.layers[1], keras.layers.Identity)
    conv = twin.get_layer("inner").get_layer("inner_bconv")
    assert conv.quantizers == {} and conv.pad_values == 0.0
    np.testing.assert_array_equal(conv.kernel.numpy(),
                                  inner.get_layer("inner_bconv").kernel.numpy())
    x = rng.uniform(-1, 1, (2, 5, 5, 3)).astype(np.float32)
    expected = _conv_same_3x3(x.astype(np.float64), conv.kernel.numpy()) + conv.bias.numpy()
    np.testing.assert_allclose(np.asarray(twin(x)), expected.reshape(2, -1), rtol=1e-4,
                               atol=1e-4)


class _BuildsItsOwnQuantizer(keras.layers.Layer):
    """A layer whose quantizer is not a constructor argument (not in its config)."""

    def build(self, input_shape):
        self.sign = kbnn_quantizers.get("ste_sign")

    def call(self, inputs):
        return self.sign(inputs)


def test_float_twin_names_a_quantizer_that_is_not_in_a_config():
    inputs = keras.Input((4,))
    outputs = _BuildsItsOwnQuantizer(name="hidden_sign")(inputs)
    with pytest.raises(ValueError, match="inside layer 'hidden_sign'.*constructor arguments"):
        float_twin(keras.Model(inputs, outputs))


@pytest.mark.filterwarnings("ignore::UserWarning")  # tf.lite.Interpreter deprecation notice
def test_float_tflite_runs_in_the_stock_interpreter(rng):
    import tensorflow as tf

    twin = float_twin(_binary_model())
    flatbuffer = float_tflite(twin)
    assert flatbuffer[4:8] == b"TFL3" and b"Lce" not in flatbuffer
    interp = tf.lite.Interpreter(model_content=flatbuffer)
    interp.allocate_tensors()
    x = rng.uniform(-1, 1, (1, 5, 5, 3)).astype(np.float32)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(twin(x)), rtol=1e-4, atol=1e-4)


def test_measure_latency_and_table():
    model = _binary_model()
    flatbuffer = float_tflite(float_twin(model))
    lat = measure_latency(flatbuffer, engine="tflite", runs=7, warmup=1)
    assert lat.runs == 7 and lat.threads == 1
    assert 0.0 < lat.min_ms <= lat.median_ms
    rows = [BenchRow("float", "tflite", 1000, Latency(2.0, 4.0, 7, 1), 1.0, 1.0),
            BenchRow("binary", "lce", 250, Latency(1.0, 2.0, 7, 1), 4.0, 2.0)]
    table = bench_table(rows)
    assert table.splitlines()[3].split() == ["binary", "lce", "1", "250", "4.00x", "1.000",
                                             "2.000", "2.00x"]
    assert bench_table(rows, markdown=True).splitlines()[1] == "|---|---|---|---|---|---|---|---|"


def test_bench_rows_compare_with_the_float_twin():
    from kbnn.converters import convert

    model = _binary_model()
    binary = convert(model)
    rows = bench(binary, model, threads=(1,), runs=3, warmup=1)
    assert [r.engine for r in rows] == ["tflite", "lce"]
    assert rows[1].size_bytes == len(binary)
    assert rows[1].size_ratio == pytest.approx(rows[0].size_bytes / len(binary))
    assert rows[1].speedup == pytest.approx(rows[0].latency.median_ms / rows[1].latency.median_ms)


@pytest.mark.parametrize("kwargs", [{"engine": "onnx"}, {"runs": 0}, {"threads": 0}])
def test_measure_latency_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="measure_latency"):
        measure_latency(b"", **kwargs)
