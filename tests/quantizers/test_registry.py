"""Registry (`get`, `serialize`, `deserialize`), `.keras` round trips, and the inference graph
of every binarizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbnn import quantizers as q

ALIASES = {
    "ste_sign": q.SteSign,
    "approx_sign": q.ApproxSign,
    "swish_sign": q.SwishSign,
    "ste_heaviside": q.SteHeaviside,
    "magnitude_aware_sign": q.MagnitudeAwareSign,
    "ste_tern": q.SteTern,
    "dorefa": q.DoReFa,
    "noop": q.NoOp,
}

# Every quantizer, with non-default arguments where it has any.
INSTANCES = [
    lambda: q.SteSign(clip_value=0.5),
    lambda: q.ApproxSign(),
    lambda: q.SwishSign(beta=3.0),
    lambda: q.SteHeaviside(clip_value=2.0),
    lambda: q.MagnitudeAwareSign(clip_value=0.8),
    lambda: q.SteTern(threshold_value=0.2, clip_value=1.5),
    lambda: q.SteTern(ternary_weight_networks=True),
    lambda: q.DoReFa(k_bit=4, mode="activations"),
    lambda: q.DoReFa(k_bit=3, mode="weights"),
    lambda: q.DoReFa(k_bit=1, mode="activations"),
    lambda: q.DoReFa(k_bit=1, mode="weights"),
    lambda: q.NoOp(precision=8),
]
IDS = ["ste_sign", "approx_sign", "swish_sign", "ste_heaviside", "magnitude_aware_sign",
       "ste_tern", "ste_tern_twn", "dorefa_a4", "dorefa_w3", "dorefa_a1", "dorefa_w1", "noop8"]

BINARIZERS = [
    lambda: q.SteSign(),
    lambda: q.ApproxSign(),
    lambda: q.SwishSign(),
    lambda: q.SteHeaviside(),
    lambda: q.MagnitudeAwareSign(),
    lambda: q.DoReFa(k_bit=1, mode="activations"),
    lambda: q.DoReFa(k_bit=1, mode="weights"),
]
BINARIZER_IDS = ["ste_sign", "approx_sign", "swish_sign", "ste_heaviside",
                 "magnitude_aware_sign", "dorefa_a1", "dorefa_w1"]


def _config(quantizer):
    config = quantizer.get_config()
    config.pop("name")
    return config


@pytest.mark.parametrize("alias, cls", ALIASES.items(), ids=list(ALIASES))
def test_alias_resolves_to_a_default_instance(alias, cls):
    obj = q.get(alias)
    assert type(obj) is cls
    assert _config(obj) == _config(cls())
    assert alias in q.known_aliases()


def test_get_accepts_none_instance_class_and_config():
    assert q.get(None) is None
    inst = q.DoReFa(k_bit=4, mode="weights")
    assert q.get(inst) is inst
    assert type(q.get(q.SwishSign)) is q.SwishSign
    from_dict = q.get(q.serialize(inst))
    assert type(from_dict) is q.DoReFa and (from_dict.k_bit, from_dict.mode) == (4, "weights")


def test_unknown_alias_lists_the_known_ones():
    with pytest.raises(ValueError, match="`kernel_quantizer`.*'ste_sgn'") as info:
        q.get("ste_sgn", argument="kernel_quantizer")
    for alias in ALIASES:
        assert alias in str(info.value)


def test_get_rejects_other_types():
    with pytest.raises(ValueError, match="`input_quantizer`.*Received: 3"):
        q.get(3, argument="input_quantizer")
    with pytest.raises(ValueError, match="does not describe a kbnn quantizer"):
        q.get(keras.saving.serialize_keras_object(keras.layers.ReLU()))


def test_serialize_deserialize_of_none_and_alias():
    assert q.serialize(None) is None and q.deserialize(None) is None
    assert type(q.deserialize("ste_tern")) is q.SteTern


@pytest.mark.parametrize("make", INSTANCES, ids=IDS)
def test_serialize_deserialize_round_trip(make):
    original = make()
    restored = q.deserialize(q.serialize(original))
    assert type(restored) is type(original)
    assert restored.get_config() == original.get_config()
    assert restored.precision == original.precision


@pytest.mark.parametrize("make", INSTANCES, ids=IDS)
def test_keras_file_round_trip(make, tmp_path, rng):
    quantizer = make()
    inputs = keras.Input(shape=(3, 4))
    model = keras.Model(inputs, quantizer(inputs))
    x = rng.uniform(-2.0, 2.0, size=(2, 3, 4)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.layers[-1]
    assert type(restored) is type(quantizer)
    assert restored.get_config() == quantizer.get_config()
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def _graph(fn, shape=(2, 3, 4)):
    return tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph


def _const_value(tensor):
    assert tensor.op.type == "Const", tensor.op.type
    return tf.make_ndarray(tensor.op.get_attr("value")).item()


@pytest.mark.parametrize("make", BINARIZERS, ids=BINARIZER_IDS)
def test_binarizer_graphs_use_select_and_no_sign(make):
    quantizer = make()
    assert quantizer.precision == 1
    inference_ops = _graph(quantizer.inference).get_operations()
    selects = [op for op in inference_ops if op.type == "SelectV2"]
    assert selects, [op.type for op in inference_ops]
    for op in selects:  # the LCE patterns: SelectV2(cond, +1.0, -1.0) or (cond, -1.0, +1.0)
        # with scalar constants; kbnn writes where(x < t, -1, +1) (NaN -> +1, as LceQuantize)
        assert (_const_value(op.inputs[1]), _const_value(op.inputs[2])) == (-1.0, 1.0)
        assert op.inputs[0].op.type == "Less"
    training_ops = _graph(quantizer.call).get_operations()
    for ops in (inference_ops, training_ops):
        assert "Sign" not in {op.type for op in ops}


@pytest.mark.parametrize("make", BINARIZERS, ids=BINARIZER_IDS)
def test_binary_form_reproduces_the_forward_value(make, rng):
    quantizer = make()
    x = rng.uniform(-1.5, 1.5, size=(5, 3, 4)).astype(np.float32)
    x[0, 0, :] = [0.0, 0.5, -0.0, 1.0]  # include the thresholds of every form
    x = tf.constant(x)
    form = quantizer.binary_form(x)
    assert form is not None
    np.testing.assert_array_equal(form(x).numpy(), quantizer(x).numpy())
    np.testing.assert_array_equal(quantizer.inference(x).numpy(), quantizer(x).numpy())


# ------------------------------------------------------------------ plain config dicts


@pytest.mark.parametrize("class_name", ["SteSign", "ste_sign"])
def test_plain_config_dict_by_class_name_or_alias(class_name):
    obj = q.get({"class_name": class_name, "config": {"clip_value": 0.5}})
    assert type(obj) is q.SteSign and obj.clip_value == 0.5
    # Every alias works as a class_name too.
    for alias, cls in ALIASES.items():
        assert type(q.get({"class_name": alias, "config": {}})) is cls


def test_plain_config_dict_in_a_layer_argument():
    from kbnn.layers import QuantConv2D

    layer = QuantConv2D(4, 3, input_quantizer={"class_name": "DoReFa",
                                               "config": {"k_bit": 3, "mode": "activations"}},
                        kernel_quantizer={"class_name": "magnitude_aware_sign", "config": {}})
    assert type(layer.input_quantizer) is q.DoReFa and layer.input_quantizer.k_bit == 3
    assert type(layer.kernel_quantizer) is q.MagnitudeAwareSign


@pytest.mark.parametrize("config, detail", [
    ({"class_name": "Dense", "config": {"units": 2}}, "'Dense' is not a kbnn quantizer"),
    ({"class_name": "ste_sgn", "config": {}}, "'ste_sgn' is not a kbnn quantizer"),
    ({"class_name": "SteSign", "config": {"clip_value": -1.0}}, "`clip_value` of SteSign"),
    ({"class_name": "SteSign", "config": {"bogus": 1}}, "bogus"),
], ids=["keras_layer", "unknown_alias", "bad_argument", "unknown_keyword"])
def test_bad_config_dicts_name_the_argument_and_owner(config, detail):
    prefix = "Invalid value for argument `kernel_quantizer` of QuantConv2D: "
    with pytest.raises(ValueError) as info:
        q.get(config, argument="kernel_quantizer", owner="QuantConv2D")
    message = str(info.value)
    assert message.startswith(prefix) and detail in message
    assert "ste_sign" in message  # lists what is allowed


def test_bad_config_dict_in_a_layer_is_a_value_error():
    from kbnn.layers import QuantDense

    with pytest.raises(ValueError, match="`input_quantizer` of QuantDense.*'Dense'"):
        QuantDense(3, input_quantizer={"class_name": "Dense", "config": {"units": 2}})


# ------------------------------------------------------------------ dtype and trainable


def test_standalone_quantizer_keeps_dtype_and_trainable(tmp_path):
    quantizer = q.DoReFa(k_bit=2, mode="activations", dtype="float16", trainable=False)
    restored = q.deserialize(q.serialize(quantizer))
    assert restored.dtype_policy.name == "float16" and restored.trainable is False

    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, q.SteSign(dtype="float16", trainable=False)(inputs))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path).layers[-1]
    assert loaded.dtype_policy.name == "float16" and loaded.trainable is False
    x = np.array([[-0.5, 0.0, 0.25, 3.0]], np.float32)
    out = loaded(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_array_equal(np.asarray(out, np.float32), [[-1.0, 1.0, 1.0, 1.0]])


def test_layer_config_gives_its_quantizers_the_layer_policy():
    from kbnn.layers import QuantConv2D

    layer = QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                        dtype="mixed_float16")
    config = layer.get_config()
    # Even a nested quantizer config that says float32 follows the layer's policy.
    config["input_quantizer"]["config"]["dtype"] = "float32"
    clone = QuantConv2D.from_config(config)
    for quantizer in clone.quantizers.values():
        assert quantizer.dtype_policy.name == "mixed_float16"
        assert quantizer.compute_dtype == "float16"
