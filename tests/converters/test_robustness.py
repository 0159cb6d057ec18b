"""Robustness of kbnn.converters: FakeQuant kernels of depthwise/separable convs in int8 mode,
non-float32 dtype policies, custom ops LCE cannot run, unknown input dimensions, corrupt
flatbuffers (API and `kbnn` command line)."""

from typing import ClassVar

import keras
import numpy as np
import pytest
from convert_helpers import bconv_count, random_inputs, seeded
from kbnn.converters import ConversionError, convert, inspect, verify
from kbnn.converters.flatbuffer import read_flatbuffer
from kbnn_apps.cli import main

from kbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D, QuantSeparableConv2D
from kbnn.quantizers import FakeQuant

SIGN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}
STATIC_FIX = "keras.Input((32, 32, 3))"


def _weights_fq():
    return FakeQuant(mode="minmax", symmetric=True, narrow_range=True)


def _op_dtypes(fb):
    g = read_flatbuffer(fb)
    return [(op.name, g.tensors[op.inputs[0]].dtype) for op in g.operators]


# ------------------------------------------------------------- 1. int8 depthwise / separable


def _set_uniform(variable, bound, seed):
    values = np.random.default_rng(seed).uniform(-bound, bound, variable.shape)
    variable.assign(values.astype("float32"))


def _int8_model(kind):
    """FakeQuant input -> depthwise or separable conv with FakeQuant kernel(s) -> FakeQuant.
    Output range [-6, 6] (the FakeQuant default, no training): one int8 step is 12/255."""
    seeded()
    inp = keras.Input((8, 8, 8))
    x = FakeQuant(name="in_fq", mode="learned", init_min=-3.0, init_max=3.0)(inp)
    fq = {"input_quantizer": FakeQuant(mode="learned", init_min=-3.0, init_max=3.0)}
    if kind == "depthwise":
        layer = QuantDepthwiseConv2D(3, padding="same", depthwise_quantizer=_weights_fq(),
                                     name="dw", **fq)
    else:
        layer = QuantSeparableConv2D(8, 3, padding="same", depthwise_quantizer=_weights_fq(),
                                     pointwise_quantizer=_weights_fq(), name="sep", **fq)
    x = FakeQuant(name="out_fq")(layer(x))
    model = keras.Model(inp, x)
    # Kernels with very different ranges: a range frozen from the wrong weight clips or
    # coarsens the other one far beyond the int8 tolerance.
    if kind == "depthwise":
        _set_uniform(layer.kernel, 0.4, 1)
    else:
        _set_uniform(layer.depthwise_kernel, 0.1, 1)
        _set_uniform(layer.pointwise_kernel, 1.0, 2)
    return model


@pytest.mark.parametrize("kind", ["depthwise", "separable"])
def test_int8_depthwise_and_separable_with_fake_quant_kernels(kind):
    model = _int8_model(kind)
    if kind == "depthwise":
        fb = convert(model, int8=True)
        assert ("DEPTHWISE_CONV_2D", "INT8") in _op_dtypes(fb)
        assert inspect(fb).float_compute_ops == []
    else:
        # No FakeQuant between the depthwise and the pointwise conv: both stay float ops (with
        # the fake-quantized weights), which convert reports.
        with pytest.warns(UserWarning, match="DEPTHWISE_CONV_2D, CONV_2D"):
            fb = convert(model, int8=True)
    step = 12.0 / 255.0  # output FakeQuant range [-6, 6] on 255 steps
    rep = verify(model, fb, random_inputs((8, 8, 8), n=8), atol=2 * step, rtol=0.0)
    assert rep.within_tolerance == 1.0, rep.table()
    assert rep.mean_abs_diff < 0.25 * step, rep.table()


class _OddDense(QuantDense):
    """A QuantDense subclass declaring a quantizer argument for a weight it does not have."""

    quantized_weight_attributes: ClassVar[dict[str, str]] = {"kernel_quantizer": "kernel",
                                                             "odd_quantizer": "odd_weight"}

    def __init__(self, *args, odd_quantizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.odd_quantizer = odd_quantizer


def test_quantizer_argument_without_its_weight_is_refused_when_building():
    seeded()
    inp = keras.Input((4,))
    with pytest.raises(ValueError, match="odd_quantizer.*odd_weight") as info:
        _OddDense(3, input_quantizer=FakeQuant(), kernel_quantizer=_weights_fq(), name="odd")(inp)
    assert "'odd'" in str(info.value)


# ------------------------------------------------------------------ 2. dtype policies


def test_mixed_float16_binary_layers_give_a_runnable_flatbuffer():
    seeded()
    inp = keras.Input((6, 6, 32))
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, dtype="mixed_float16", name="c1",
                    **SIGN)(inp)
    x = QuantConv2D(32, 3, padding="same", pad_values=0.0, dtype="mixed_float16", name="c0",
                    **SIGN)(x)
    x = QuantDense(8, dtype="mixed_float16", name="d", **SIGN)(x)
    model = keras.Model(inp, keras.layers.Activation("linear", dtype="float32")(x))
    result = convert(model, return_report=True)
    assert bconv_count(result.flatbuffer) == 3
    assert set(result.report.custom_ops) <= {"LceQuantize", "LceBconv2d", "LceDequantize"}
    assert result.warnings == []
    # ±1 inputs and kernels: every sum is an integer below 2048, exact in float16 too
    rep = verify(model, result.flatbuffer, random_inputs((6, 6, 32), n=4), atol=0.0, rtol=0.0)
    assert rep.within_tolerance == 1.0, rep.table()


def _float16_dense_model():
    seeded()
    inp = keras.Input((6, 6, 32))
    x = QuantConv2D(32, 3, name="bconv", **SIGN)(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, dtype="mixed_float16", name="half_dense")(x)
    return keras.Model(inp, keras.layers.Activation("linear", dtype="float32")(x))


def test_non_lce_custom_ops_are_refused_in_strict_mode():
    # TFLite has no float16 MatMul builtin: the converter leaves a custom op LCE cannot run.
    with pytest.raises(ConversionError, match="unresolved custom op") as info:
        convert(_float16_dense_model())
    message = str(info.value)
    assert "MatMul" in message and "half_dense" in message  # the op and its tensor name
    assert "float32" in info.value.fix


def test_non_lce_custom_ops_are_warnings_without_strict():
    model = _float16_dense_model()
    with pytest.warns(UserWarning, match="MatMul"):
        result = convert(model, strict=False, return_report=True)
    assert any("MatMul" in note for note in result.warnings)
    assert "MatMul" in result.report.foreign_custom_ops
    assert "LceBconv2d" not in result.report.foreign_custom_ops
    assert "MatMul" in result.report.table()
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    with pytest.raises(RuntimeError):  # the reason for refusing: it really cannot run
        Interpreter(result.flatbuffer).predict(random_inputs((6, 6, 32), n=1))


# ------------------------------------------------------------- 3. unknown input dimensions


@pytest.mark.parametrize("shape, make", [
    ((None, None, 32), lambda: QuantConv2D(32, 3, padding="same", pad_values=1.0, name="dyn",
                                           **SIGN)),
    ((None, None, 32), lambda: QuantConv2D(32, 3, name="dyn", **SIGN)),
    ((None, 32), lambda: QuantDense(8, name="dyn", **SIGN)),
])
def test_unknown_input_dimensions_name_the_layer(shape, make):
    inp = keras.Input(shape)
    model = keras.Model(inp, make()(inp))
    with pytest.raises(ConversionError, match="unknown dimensions") as info:
        convert(model)
    assert info.value.layer == "dyn"
    assert STATIC_FIX in info.value.fix
    assert str((None, *shape)) in info.value.reason


def test_unknown_dimensions_found_at_export_keep_the_layer_name(monkeypatch):
    """Without the planning check the export form itself refuses the shape; the error raised
    inside the Keras layer call reaches the caller as it was raised (layer named)."""
    import kbnn.converters.layers as planning

    monkeypatch.setattr(planning, "_check_static_input", lambda layer: None)
    inp = keras.Input((None, None, 32))
    model = keras.Model(inp, QuantConv2D(32, 3, name="late", **SIGN)(inp))
    with pytest.raises(ConversionError, match="unknown dimensions") as info:
        convert(model)
    assert info.value.layer == "late" and STATIC_FIX in info.value.fix
    assert "Exception encountered" not in str(info.value)


class _Fragile(keras.layers.Layer):
    """Identity that raises while `fail` is set (i.e. only during the export trace)."""

    fail = False

    def call(self, x):
        if _Fragile.fail:
            raise ValueError("shapes (3,) and (4,) are incompatible\nsecond detail line")
        return x


def test_export_errors_keep_their_informative_message(monkeypatch):
    inp = keras.Input((4,))
    model = keras.Model(inp, _Fragile(name="fragile")(keras.layers.Dense(4)(inp)))
    monkeypatch.setattr(_Fragile, "fail", True)
    with pytest.raises(ConversionError) as info:
        convert(model)
    message = str(info.value)
    assert "shapes (3,) and (4,) are incompatible" in message
    assert "second detail line" in message
    assert "_Fragile" in message  # the Keras layer class the error came from
    assert "\n" not in message and "\x1b" not in message


def test_cli_convert_unknown_dimensions_is_one_line(tmp_path, capsys):
    inp = keras.Input((None, None, 32))
    path = tmp_path / "dyn.keras"
    keras.Model(inp, QuantConv2D(32, 3, name="dyn_conv", **SIGN)(inp)).save(path)
    out = tmp_path / "dyn.tflite"
    assert main(["convert", str(path), "-o", str(out)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("kbnn: error: conversion failed")
    assert "'dyn_conv'" in lines[0] and "static shape" in lines[0]
    assert not out.exists()


# ------------------------------------------------------------------ 4. corrupt flatbuffers


@pytest.fixture(scope="module")
def valid_flatbuffer():
    seeded()
    inp = keras.Input((4, 4, 32))
    return convert(keras.Model(inp, QuantConv2D(32, 3, **SIGN)(inp)))


@pytest.mark.parametrize("corrupt", [
    lambda fb: b"abcdTFL3garbagegarbage",  # identifier present, nonsense after
    lambda fb: fb[:64],  # truncated
    lambda fb: b"\x00" * 4 + fb[4:8] + b"\xff" * 24,  # root offset beyond the end
    lambda fb: b"not a flatbuffer at all",  # no identifier
])
def test_inspect_refuses_corrupt_flatbuffers(valid_flatbuffer, corrupt):
    assert inspect(valid_flatbuffer).n_binary_convs == 1  # the source is fine
    with pytest.raises(ValueError, match="^not a valid TFLite flatbuffer: "):
        inspect(corrupt(valid_flatbuffer))


def test_cli_inspect_corrupt_file_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"abcdTFL3garbagegarbage")
    assert main(["inspect", str(path)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    # the file is named, and the structure check says where the bytes break (issue 11)
    assert lines[0].startswith(f"kbnn: error: {path}: not a valid TFLite flatbuffer: ")
    assert "error: error" not in lines[0] and "broken structure at root offset" in lines[0]
