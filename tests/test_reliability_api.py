"""Clear, early errors (or the right result) for the unusual inputs of issue 11 that go through
the Python API: quantizers, quantized layers, `kbnn.summary`/`kbnn.profile`, and the
converters' `inspect`/`verify`. Each test asserts the error type and that the message names
the argument, layer or path; expected values are computed here with numpy."""

import math
import struct
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
from kbnn import quantizers as q
from kbnn.converters import VerifyReport, convert, inspect, run_flatbuffer, verify
from kbnn.converters.flatbuffer import verify_structure
from kbnn.layers import (
    QuantConv1D,
    QuantConv2D,
    QuantDense,
    QuantSeparableConv2D,
)

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}


# ------------------------------------------------------------------ quantizer roles


WEIGHT_ONLY = {"libra_weight": q.LibraSign, "xnor_weight": q.XnorWeight,
               "scaled_sign": q.ScaledSign, "magnitude_aware_sign": q.MagnitudeAwareSign,
               "adabin_weight": q.AdaBinWeight}


def test_quantizers_declare_what_they_quantize():
    for cls in WEIGHT_ONLY.values():
        assert cls.applies_to == "weights", cls
    for cls in (q.RSign, q.AdaBinActivation):
        assert cls.applies_to == "activations", cls
    for cls in (q.SteSign, q.ApproxSign, q.SwishSign, q.SteHeaviside, q.EDESign, q.SteTern,
                q.NoOp, q.FakeQuant):
        assert cls.applies_to == "both", cls
    assert q.DoReFa(mode="weights").applies_to == "weights"
    assert q.DoReFa(mode="activations").applies_to == "activations"
    assert set(q.base.APPLIES_TO) == {"activations", "weights", "both"}


@pytest.mark.parametrize("alias", sorted(WEIGHT_ONLY))
@pytest.mark.parametrize("layer", [lambda **k: QuantDense(4, **k),
                                   lambda **k: QuantConv2D(4, 3, **k),
                                   lambda **k: QuantConv1D(4, 3, **k)],
                         ids=["QuantDense", "QuantConv2D", "QuantConv1D"])
def test_weight_quantizer_as_input_quantizer_is_refused_at_construction(alias, layer):
    with pytest.raises(ValueError) as info:
        layer(input_quantizer=alias, kernel_quantizer="ste_sign")
    message = str(info.value)
    assert "argument `input_quantizer`" in message
    assert WEIGHT_ONLY[alias].__name__ in message and "quantizes weights" in message
    assert f"Received input_quantizer={alias!r}" in message


def test_weight_quantizer_instance_as_input_quantizer_is_refused():
    with pytest.raises(ValueError, match=r"`input_quantizer` of QuantConv2D.*LibraSign"):
        QuantConv2D(4, 3, input_quantizer=q.LibraSign())
    with pytest.raises(ValueError, match=r"`input_quantizer` of QuantDense.*DoReFa"):
        QuantDense(4, input_quantizer=q.DoReFa(k_bit=2, mode="weights"))


def test_activation_quantizers_stay_valid_as_kernel_quantizers():
    # as in larq (and the converter's contract: every binarizer converts as a kernel quantizer)
    layer = QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="rsign")
    assert layer(np.ones((1, 5, 5, 2), np.float32)).shape == (1, 3, 3, 4)


def test_right_roles_still_build():
    layer = QuantConv2D(4, 3, input_quantizer="rsign", kernel_quantizer="libra_weight")
    assert layer(np.ones((1, 5, 5, 2), np.float32)).shape == (1, 3, 3, 4)
    QuantDense(4, input_quantizer=q.DoReFa(k_bit=2), kernel_quantizer=q.DoReFa(mode="weights"))


# ------------------------------------------------------------------ DoReFa mode


def test_dorefa_mode_assigned_after_construction_is_checked_where_used():
    quantizer = q.DoReFa(k_bit=2)
    quantizer.mode = "weight"  # a typo: used to run the weights formula silently
    with pytest.raises(ValueError) as info:
        quantizer(np.ones(3, np.float32))
    assert "argument `mode` of DoReFa" in str(info.value)
    assert "Received mode='weight'" in str(info.value)
    with pytest.raises(ValueError, match="argument `mode` of DoReFa"):
        quantizer.binary_form(np.ones(3, np.float32))
    quantizer.mode = "weights"  # a valid mode still works: tanh-normalised weights
    w = np.array([0.5, -1.0, 0.25, -0.25], np.float32)
    t = np.tanh(w)
    c = t / (2 * np.abs(t).max())
    expected = (2 * np.floor(c * 3) + 1) / 3  # k_bit=2: n = 3 levels
    np.testing.assert_allclose(quantizer(w).numpy(), expected, rtol=1e-6)


# ------------------------------------------------------------------ filters / units


@pytest.mark.parametrize("value", ["a", True, 32.5, 0, -3, None, 8.0])
@pytest.mark.parametrize("cls", [QuantConv2D, QuantConv1D, QuantSeparableConv2D])
def test_filters_must_be_a_positive_integer(cls, value):
    with pytest.raises(ValueError) as info:
        cls(value, 3)
    assert str(info.value) == (f"Invalid value for argument `filters` of {cls.__name__}. "
                               "Expected a strictly positive integer. "
                               f"Received filters={value!r}.")


@pytest.mark.parametrize("value", ["a", True, 2.5, 0])
def test_units_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=r"argument `units` of QuantDense\. Expected a "
                                         r"strictly positive integer"):
        QuantDense(value)


def test_numpy_integer_filters_are_accepted():
    assert QuantConv2D(np.int64(8), 3).filters == 8
    assert QuantDense(np.int32(4)).units == 4


# ------------------------------------------------------------------ clip_value=None


@pytest.mark.parametrize("cls", [q.SteSign, q.SteHeaviside, q.MagnitudeAwareSign, q.ScaledSign,
                                 q.SteTern])
def test_clip_value_none_is_larq_unclipped_ste(cls):
    quantizer = cls(clip_value=None)
    assert quantizer.clip_value is None
    assert cls.from_config(quantizer.get_config()).clip_value is None
    x = tf.constant([[-3.0, -1.0, -0.2], [0.0, 0.7, 5.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
    grad = tape.gradient(y, x).numpy()
    if cls is q.SteSign or cls is q.SteTern:
        expected = np.ones((2, 3))  # straight through everywhere, |x| > 1 included
    elif cls is q.SteHeaviside:
        expected = np.ones((2, 3))  # 0.5 * s(x) + 0.5: 0.5 * 2
    elif cls is q.MagnitudeAwareSign:
        expected = np.broadcast_to(np.abs(x.numpy()).mean(axis=0), (2, 3))  # mean|W| per column
    else:  # ScaledSign: the STE without the scale (detached in ReActNet)
        expected = np.ones((2, 3))
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    clipped = cls(clip_value=1.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = clipped(x)
    assert tape.gradient(y, x).numpy()[0, 0] == 0.0  # |-3| > 1: clipped


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan, "1", True])
def test_clip_value_still_refuses_bad_numbers(value):
    with pytest.raises(ValueError) as info:
        q.SteSign(clip_value=value)
    assert "argument `clip_value` of SteSign" in str(info.value)
    assert "or None" in str(info.value)


# ------------------------------------------------------------------ integer and string inputs


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, bool])
def test_integer_and_bool_inputs_are_cast_as_keras_does(dtype):
    keras.utils.set_random_seed(0)
    layer = QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    x = np.array([[0, 1, 2, 3], [1, 0, 1, 0]]).astype(dtype)
    y = layer(x)
    assert y.dtype == tf.float32
    kernel = np.where(layer.kernel.numpy() < 0, -1.0, 1.0)
    signs = np.where(x.astype(np.float32) < 0, -1.0, 1.0)  # every value >= 0: +1
    np.testing.assert_allclose(y.numpy(), signs @ kernel + layer.bias.numpy(), rtol=1e-6)
    conv = QuantConv2D(2, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    assert conv(np.ones((1, 2, 2, 3), dtype)).dtype == tf.float32
    assert q.SteSign()(np.array([-2, 0, 3]).astype(dtype)).numpy().dtype == np.float32


def test_integer_inputs_in_a_functional_model():
    inputs = keras.Input((4,), dtype="int32")
    model = keras.Model(inputs, QuantDense(2, input_quantizer="ste_sign")(inputs))
    assert model(np.array([[1, -1, 2, -2]], np.int32)).shape == (1, 2)


def test_string_inputs_get_a_clear_error_naming_the_layer():
    layer = QuantDense(3, input_quantizer="ste_sign", name="head")
    with pytest.raises(TypeError) as info:
        layer(np.array([["a", "b"]]))
    assert "Invalid input for QuantDense 'head'" in str(info.value)
    assert "dtype string" in str(info.value)
    with pytest.raises(TypeError, match=r"Invalid input for SteSign 'sign'.*dtype string"):
        q.SteSign(name="sign")(tf.constant(["a"]))


# ------------------------------------------------------------------ summary / profile


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv", **BINARY)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="tiny")


@pytest.mark.parametrize("function", [kbnn.summary, kbnn.profile])
def test_summary_and_profile_of_a_path_say_what_to_pass(function, tmp_path):
    path = tmp_path / "m.keras"
    for value in (str(path), path):
        with pytest.raises(TypeError) as info:
            function(value)
        assert "argument `model`" in str(info.value)
        assert "keras.models.load_model(path)" in str(info.value)
        assert "m.keras" in str(info.value)


@pytest.mark.parametrize("shape", [(6, 6, 16), (6, 6), (5, 5, 3), [(6, 6, 3), (6, 6, 3)]])
def test_summary_input_shape_that_does_not_fit_raises(shape):
    lines = []
    with pytest.raises(ValueError) as info:
        kbnn.summary(_tiny_model(), print_fn=lines.append, input_shape=shape)
    assert "argument `input_shape`" in str(info.value)
    assert "'tiny'" in str(info.value) and "(6, 6, 3)" in str(info.value)
    assert lines == []  # nothing printed, no "?" table


@pytest.mark.parametrize("shape", [(0, 6, 3), (6.5, 6, 3), "6,6,3", (), (True, 6, 3)])
def test_summary_input_shape_that_is_not_a_shape_raises(shape):
    with pytest.raises(ValueError, match=r"argument `input_shape` of kbnn\.profile\. Expected "
                                         r"the shape of one sample"):
        kbnn.profile(_tiny_model(), input_shape=shape)


def test_summary_input_shape_that_fits_unknown_dimensions():
    inputs = keras.Input((None, None, 32))
    model = keras.Model(inputs, QuantConv2D(32, 3, padding="same", pad_values=1.0,
                                            **BINARY)(inputs))
    assert kbnn.profile(model, input_shape=(6, 6, 32)).bops == 3 * 3 * 32 * 32 * 6 * 6
    with pytest.raises(ValueError, match=r"fits the input shape \(\?, \?, 32\)"):
        kbnn.profile(model, input_shape=(6, 6, 16))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 12)))


def test_subclassed_model_with_an_input_shape_it_cannot_run_raises_without_a_warning():
    with warnings.catch_warnings(record=True) as record, pytest.raises(ValueError) as info:
        warnings.simplefilter("always")
        kbnn.profile(_Subclassed(), input_shape=(5, 5))
    message = str(info.value)
    assert "argument `input_shape`" in message and "'sub'" in message
    assert "array(" not in message and "\n" not in message
    assert not [w for w in record if "kbnn.profile" in str(w.message)]
    assert kbnn.profile(_Subclassed(), input_shape=(3, 4)).flops == 12 * 3


def test_summary_fits_100_columns_and_prints_integers():
    lines = []
    kbnn.summary(_tiny_model(), print_fn=lines.append)
    assert max(len(line) for line in lines) <= 100
    wide = []
    kbnn.summary(_tiny_model(), print_fn=wide.append, wide=True)
    assert max(len(line) for line in wide) > 100
    text = "\n".join(lines + wide)
    assert ".00" not in text.replace("100.00 %", "")  # byte counts and OPs are integers
    params = _tiny_model().count_params()
    assert f"Float-32 equivalent size: {params * 4:,} B" in text
    # bconv: 3*3*32*32 one-bit weights = 1,152 bytes, printed as an integer in the wide table
    bconv_row = next(line for line in wide if line.startswith("bconv ("))
    assert " 1,152 " in bconv_row
    with pytest.raises(TypeError, match="argument `wide` of kbnn.summary"):
        kbnn.summary(_tiny_model(), wide="yes")


def test_fractional_sizes_keep_their_decimals():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, QuantDense(3, kernel_quantizer="ste_sign", use_bias=False)(inputs))
    lines = []
    kbnn.summary(model, print_fn=lines.append)
    # 9 one-bit weights: 9 / 8 = 1.125 bytes
    assert "Model size (binary weights at 1 bit): 1.125 B" in "\n".join(lines)


# ------------------------------------------------------------------ inspect


@pytest.fixture(scope="module")
def converted():
    model = _tiny_model()
    return model, convert(model)


def test_inspect_accepts_a_path(converted, tmp_path):
    _, flatbuffer = converted
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffer)
    assert inspect(path).op_counts == inspect(flatbuffer).op_counts
    assert inspect(str(path)).size_bytes == len(flatbuffer)
    with pytest.raises(FileNotFoundError, match=r"argument `flatbuffer` of inspect.*nope"):
        inspect(tmp_path / "nope.tflite")
    with pytest.raises(TypeError, match=r"argument `flatbuffer` of inspect.*Functional"):
        inspect(converted[0])


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75, 0.9, 0.99])
def test_inspect_rejects_truncated_and_zero_padded_flatbuffers(converted, fraction):
    _, flatbuffer = converted
    cut = int(len(flatbuffer) * fraction)
    for broken in (flatbuffer[:cut], flatbuffer[:cut] + bytes(len(flatbuffer) - cut)):
        with pytest.raises(ValueError, match="not a valid TFLite flatbuffer"):
            inspect(broken)


def test_every_zero_padded_truncation_is_refused(converted):
    _, flatbuffer = converted
    accepted = []
    for cut in range(8, len(flatbuffer), max(1, len(flatbuffer) // 200)):
        try:
            inspect(flatbuffer[:cut] + bytes(len(flatbuffer) - cut))
        except ValueError:
            continue
        accepted.append(cut)
    assert accepted == []


def test_structure_errors_name_the_broken_part(converted):
    _, flatbuffer = converted
    verify_structure(flatbuffer)  # a converted flatbuffer passes
    root = struct.unpack_from("<I", flatbuffer, 0)[0]
    broken = bytearray(flatbuffer)
    struct.pack_into("<i", broken, root, 0)  # the model table's vtable offset: 0 (invalid)
    with pytest.raises(ValueError, match=r"broken structure at model: vtable .* invalid size"):
        inspect(bytes(broken))
    broken = bytearray(flatbuffer)
    struct.pack_into("<I", broken, 0, len(flatbuffer) + 100)  # root offset past the end
    with pytest.raises(ValueError, match="root offset"):
        inspect(bytes(broken))


# ------------------------------------------------------------------ verify


def test_verify_counts_non_finite_inputs_and_outputs(converted):
    model, flatbuffer = converted
    x = np.random.default_rng(0).uniform(-1, 1, (6, 6, 6, 3)).astype(np.float32)
    x[:2] = np.nan
    report = verify(model, flatbuffer, x)
    assert report.nonfinite_input_samples == 2
    # the float stem turns NaN into NaN, the binary conv's sign maps NaN to +1 in both
    keras_out = np.asarray(model(x))
    assert report.nonfinite_keras_values == int((~np.isfinite(keras_out)).sum()) == 0
    assert report.nonfinite_tflite_values == 0
    assert report.n_output_values == 6 * 4
    table = report.table()
    assert table.splitlines()[1].split() == ["inputs", "with", "NaN/inf", "2", "of", "6"]
    assert "NaN/inf outputs (keras/tflite)" in table


def test_verify_of_all_nan_outputs_is_not_a_pass():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    x = np.full((5, 4), np.nan, np.float32)
    flatbuffer = convert(model)
    report = verify(model, flatbuffer, x)
    assert report.nonfinite_input_samples == 5
    assert report.nonfinite_keras_values == 15  # NaN * W + b is NaN in Keras
    # TFLite's FULLY_CONNECTED kernel need not give NaN: counted from its own outputs
    tflite_nonfinite = int((~np.isfinite(run_flatbuffer(flatbuffer, x))).sum())
    assert report.nonfinite_tflite_values == tflite_nonfinite
    assert report.within_tolerance == 0.0 and report.top1_agreement == 0.0
    assert not report.ok and math.isnan(report.max_abs_diff)
    assert "5 of 5" in report.table()
    assert f"15 / {tflite_nonfinite} of 15 values" in report.table()


def test_verify_report_keeps_its_old_fields():
    report = VerifyReport(3, 0.0, 0.0, 0.0, 1.0, 1.0, 1e-4, 1e-4)
    assert report.ok and report.nonfinite_input_samples == 0


@pytest.mark.parametrize("inputs, error, words", [
    (np.zeros((0, 6, 6, 3), np.float32), ValueError, ["empty batch", "(6, 6, 3)"]),
    (np.zeros((2, 5, 5, 3), np.float32), ValueError, ["samples of shape (6, 6, 3)", "(2, 5, 5, 3)"]),
    (np.zeros((6, 6, 3), np.float32), ValueError, ["rank 4", "x[None]"]),
    (np.zeros((2, 6, 6, 3, 1), np.float32), ValueError, ["rank 4"]),
    (np.array([["a"]]), TypeError, ["numbers", "<U1"]),
    ({"image": np.zeros((1, 6, 6, 3))}, TypeError, ["single-input", "'image'"]),
    ([np.zeros((1, 6, 6, 3)), np.zeros((1, 3))], ValueError, ["single-input"]),
], ids=["empty", "shape", "rank-missing-batch", "rank-extra", "strings", "dict", "list"])
def test_verify_refuses_bad_inputs_naming_them(converted, inputs, error, words):
    model, flatbuffer = converted
    with pytest.raises(error) as info:
        verify(model, flatbuffer, inputs)
    assert "argument `inputs` of verify" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_verify_and_run_flatbuffer_cast_integer_inputs(converted):
    model, flatbuffer = converted
    x = np.random.default_rng(1).integers(-2, 3, (3, 6, 6, 3))
    assert verify(model, flatbuffer, x).ok
    np.testing.assert_allclose(run_flatbuffer(flatbuffer, x),
                               np.asarray(model(x.astype(np.float32))), atol=1e-4)
    with pytest.raises(ValueError, match="argument `inputs` of run_flatbuffer"):
        run_flatbuffer(flatbuffer, x[:0])


def test_verify_refuses_a_flatbuffer_of_another_model(converted):
    _, flatbuffer = converted
    inputs = keras.Input((6, 6, 3))
    other_outputs = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)),
                                name="other")
    with pytest.raises(ValueError) as info:
        verify(other_outputs, flatbuffer, np.zeros((1, 6, 6, 3)))
    assert "argument `flatbuffer` of verify" in str(info.value)
    assert "output shape (4,)" in str(info.value) and "(5,)" in str(info.value)
    inputs = keras.Input((5, 5, 3))
    other_inputs = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match=r"input shape \(6, 6, 3\).*\(5, 5, 3\)"):
        verify(other_inputs, flatbuffer, np.zeros((1, 6, 6, 3)))


def test_verify_with_swapped_arguments_says_so(converted):
    model, flatbuffer = converted
    with pytest.raises(TypeError, match=r"swapped.*verify\(model, flatbuffer, inputs\)"):
        verify(flatbuffer, model, np.zeros((1, 6, 6, 3)))
    with pytest.raises(TypeError, match=r"argument `model` of verify.*load_model"):
        verify("m.keras", flatbuffer, np.zeros((1, 6, 6, 3)))


def test_verify_refuses_multi_input_models_clearly(converted):
    _, flatbuffer = converted
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Add()([a, b]), name="two")
    with pytest.raises(ValueError) as info:
        verify(model, flatbuffer, [np.zeros((2, 3)), np.zeros((2, 3))])
    assert "argument `model` of verify" in str(info.value)
    assert "'two' with 2 inputs" in str(info.value)


def test_verify_accepts_a_flatbuffer_path(converted, tmp_path):
    model, flatbuffer = converted
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffer)
    assert verify(model, path, np.zeros((2, 6, 6, 3), np.float32)).ok


def test_verify_of_a_broken_flatbuffer_names_the_argument(converted):
    model, flatbuffer = converted
    half = flatbuffer[: len(flatbuffer) // 2]
    with pytest.raises(ValueError, match=r"argument `flatbuffer` of verify: not a valid TFLite"):
        verify(model, half, np.zeros((1, 6, 6, 3)))
    with pytest.raises(ValueError, match=r"argument `flatbuffer` of run_flatbuffer: not a valid"):
        run_flatbuffer(half, np.zeros((1, 6, 6, 3)))


@pytest.mark.parametrize("model", [lambda: keras.Sequential(),
                                   lambda: keras.Sequential([keras.layers.Dense(2)])],
                         ids=["empty", "unbuilt"])
def test_convert_of_an_empty_or_unbuilt_model_names_the_argument(model):
    with pytest.raises(ValueError, match=r"argument `model` of convert\. Expected a"):
        convert(model())
