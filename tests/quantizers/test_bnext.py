"""BNext quantizers (arXiv 2211.12933; docs/methods.md, section 'BNext'): HardSign
("hard_sign") and the temperature-annealed weights of HardBinaryConv ("bnext_weight"), tau's
schedule (start, middle, end, boundary), and what the converter says about weights that are
not binary yet."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from bnext_reference import bnext_weight as np_bnext_weight
from reference_values import SIGN_X, STE_GRAD, X, value_and_grad

from kbnn import quantizers as q
from kbnn.constraints import WeightClip
from kbnn.layers import QuantConv2D
from kbnn.quantizers import BinaryForm, BNextWeight, HardSign
from kbnn.training import QuantizerSchedule
from kbnn.training.bnext import bnext_tau, bnext_tau_schedule

# Points around the clip range +-1.5 of HardSign's gradient.
WIDE = np.array([-3.0, -1.5001, -1.5, -1.0, -0.25, 0.0, 0.25, 1.0, 1.5, 1.5001, 3.0], np.float32)
WIDE_SIGN = np.array([-1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1], np.float32)
WIDE_GRAD_15 = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # 1[|x| <= 1.5], by hand

# tau of the official buffer: float32, multiplied in place by 0.9 after every epoch.
F32_BOUNDARY = np.float32(1e-7)


def _official_taus(epochs: int) -> list:
    """tau during each epoch 0..epochs-1 as the official float32 buffer holds it."""
    tau, taus = np.float32(1.0), []
    for _ in range(epochs):
        taus.append(tau)
        tau = np.float32(tau * np.float32(0.9))
    return taus


# ------------------------------------------------------------------------------ HardSign


def test_hard_sign_forward_and_gradient_by_hand():
    quantizer = HardSign()
    y, dx = value_and_grad(quantizer, WIDE)
    np.testing.assert_array_equal(y, WIDE_SIGN)
    np.testing.assert_array_equal(dx, WIDE_GRAD_15)
    # the reference points x of docs/methods.md all lie in [-1.5, 1.5]: gradient 1 everywhere
    y, dx = value_and_grad(quantizer, X)
    np.testing.assert_array_equal(y, SIGN_X)
    np.testing.assert_array_equal(dx, np.ones_like(X))


def test_hard_sign_clip_range_argument():
    upstream = np.arange(1, 10, dtype=np.float32)
    _, dx = value_and_grad(HardSign(clip_range=1.0), X, upstream)
    np.testing.assert_array_equal(dx, STE_GRAD * upstream)  # 1[|x| <= 1] times upstream
    _, dx = value_and_grad(HardSign(clip_range=None), WIDE)
    np.testing.assert_array_equal(dx, np.ones_like(WIDE))


def test_hard_sign_form_alias_and_config():
    quantizer = q.get("hard_sign")
    assert type(quantizer) is HardSign and quantizer.clip_range == 1.5
    assert quantizer.precision == 1 and quantizer.applies_to == "activations"
    form = quantizer.binary_form(tf.constant(WIDE))
    np.testing.assert_array_equal(form(tf.constant(WIDE)).numpy(), WIDE_SIGN)
    clone = HardSign.from_config(HardSign(clip_range=0.75).get_config())
    assert clone.clip_range == 0.75


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), "1.5", True])
def test_hard_sign_bad_clip_range(bad):
    with pytest.raises(ValueError, match=r"`clip_range` of HardSign.*Received clip_range="):
        HardSign(clip_range=bad)


# --------------------------------------------------------------------------- BNextWeight


def _weight(tau):
    quantizer = BNextWeight()
    quantizer.build((4, 2))
    quantizer.tau.assign(tau)
    return quantizer


W = np.array([[0.5, -1.2], [-0.05, 2.0], [0.0, -0.3], [5e-8, -7e-8]], np.float32)


@pytest.mark.parametrize("tau, expected", [
    # clamp(W / tau, -1, 1), by hand
    (1.0, [[0.5, -1.0], [-0.05, 1.0], [0.0, -0.3], [5e-8, -7e-8]]),
    (0.5, [[1.0, -1.0], [-0.1, 1.0], [0.0, -0.6], [1e-7, -1.4e-7]]),
    (0.1, [[1.0, -1.0], [-0.5, 1.0], [0.0, -1.0], [5e-7, -7e-7]]),
    # tau = 1e-7 exactly (in float32) is still the soft clamp: 5e-8 / 1e-7 = 0.5
    (1e-7, [[1.0, -1.0], [-1.0, 1.0], [0.0, -1.0], [0.5, -0.7]]),
    # just below 1e-7: sign(W), with sign(0) = +1
    (np.nextafter(F32_BOUNDARY, np.float32(0)), [[1, -1], [-1, 1], [1, -1], [1, -1]]),
    (0.0, [[1, -1], [-1, 1], [1, -1], [1, -1]]),
])
def test_bnext_weight_forward_by_hand(tau, expected):
    quantizer = _weight(tau)
    y = quantizer(W).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(y, np_bnext_weight(W.astype(np.float64), tau), rtol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 1e-3, 1e-7, 1e-8])
def test_bnext_weight_gradient_is_the_identity_in_every_phase(tau, rng):
    quantizer = _weight(tau)
    upstream = rng.normal(size=W.shape).astype(np.float32)
    _, dw = value_and_grad(quantizer, W, upstream)
    np.testing.assert_array_equal(dw, upstream)  # no clip, no 1/tau factor
    tau_tensor = tf.constant(tau, tf.float32)
    with tf.GradientTape() as tape:  # nothing flows to tau, even when it is watched
        tape.watch(tau_tensor)
        loss = tf.reduce_sum(q.bnext_weight(W, tau_tensor) * upstream)
    dtau = tape.gradient(loss, tau_tensor)
    assert dtau is None or float(dtau) == 0.0


def test_bnext_weight_binary_form_only_once_binary():
    quantizer = _weight(1e-7)
    assert quantizer.binary_form(tf.constant(W)) is None
    reason = quantizer.binary_form_unavailable_reason()
    assert "tau = 1e-07" in reason and "not binary" in reason
    quantizer.tau.assign(9.9e-8)
    form = quantizer.binary_form(tf.constant(W))
    assert isinstance(form, BinaryForm)
    np.testing.assert_array_equal(form(tf.constant(W)).numpy(), quantizer(W).numpy())
    assert quantizer.binary_form_unavailable_reason() is None


def test_bnext_weight_defaults_alias_config_and_checks():
    quantizer = q.get("bnext_weight")
    assert type(quantizer) is BNextWeight and quantizer.applies_to == "weights"
    quantizer.build((3, 3, 4, 8))
    assert float(quantizer.tau) == 1.0 and not quantizer.tau.trainable
    assert quantizer.trainable_weights == []
    clone = BNextWeight.from_config(BNextWeight(tau=0.5, binary_below=1e-6).get_config())
    assert (clone.get_config()["tau"], clone.binary_below) == (0.5, 1e-6)
    with pytest.raises(ValueError, match=r"`tau` of BNextWeight.*Received tau=0"):
        BNextWeight(tau=0)
    with pytest.raises(ValueError, match=r"`binary_below` of BNextWeight"):
        BNextWeight(binary_below=-1.0)


def test_tau_is_saved_in_keras_files(tmp_path):
    inputs = keras.Input((6, 6, 4))
    conv = QuantConv2D(4, 3, input_quantizer="hard_sign", kernel_quantizer="bnext_weight",
                       kernel_constraint=WeightClip(1.5), name="conv")
    model = keras.Model(inputs, conv(inputs))
    conv.kernel_quantizer.tau.assign(0.0123)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert float(loaded.get_layer("conv").kernel_quantizer.tau) == pytest.approx(0.0123)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


# ---------------------------------------------------------------------------- tau schedule


def test_tau_schedule_start_middle_end_and_boundary():
    # start, middle (76 = half of 153), end: the last soft epoch 152 and the first binary 153
    assert bnext_tau(0) == 1.0
    assert bnext_tau(1) == pytest.approx(0.9)
    assert bnext_tau(76) == pytest.approx(3.32990e-4, rel=1e-5)
    assert bnext_tau(152) == pytest.approx(1.10882e-7, rel=1e-5)
    assert bnext_tau(153) == pytest.approx(9.97939e-8, rel=1e-5)
    official = _official_taus(160)
    first_binary = next(e for e, t in enumerate(official) if t < F32_BOUNDARY)
    assert first_binary == 153  # the official float32 buffer crosses 1e-7 at epoch 153 too
    callback = bnext_tau_schedule()
    for epoch in (0, 76, 152, 153, 154):
        assert callback.value("tau", epoch) == pytest.approx(float(official[epoch]), rel=1e-5)
        assert (np.float32(callback.value("tau", epoch)) < F32_BOUNDARY) == (epoch >= 153)


def test_tau_schedule_drives_every_bnext_weight_during_fit():
    inputs = keras.Input((6, 6, 4))
    x = QuantConv2D(4, 3, padding="same", input_quantizer="hard_sign",
                    kernel_quantizer="bnext_weight", name="a")(inputs)
    x = QuantConv2D(4, 1, input_quantizer="hard_sign", kernel_quantizer="bnext_weight",
                    name="b")(x)
    model = keras.Model(inputs, x)
    model.compile("adam", "mse")
    xs = np.random.default_rng(0).normal(size=(8, 6, 6, 4)).astype("float32")
    callback = bnext_tau_schedule(decay=1e-4)
    history = model.fit(xs, xs, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
    np.testing.assert_allclose(history.history["bnext_tau"], [1.0, 1e-4, 1e-8], rtol=1e-6)
    for name in ("a", "b"):
        quantizer = model.get_layer(name).kernel_quantizer
        assert float(quantizer.tau) == pytest.approx(1e-8) and quantizer.is_exactly_binary


def test_tau_schedule_per_step_and_config_round_trip():
    callback = bnext_tau_schedule(update_freq="step", decay_steps=10)
    assert [callback.value("tau", i) for i in (0, 9, 10, 25)] == pytest.approx(
        [1.0, 1.0, 0.9, 0.81])
    clone = QuantizerSchedule.from_config(callback.get_config())
    assert clone.update_freq == "step" and clone.quantizer_class == (BNextWeight,)
    assert clone.value("tau", 25) == pytest.approx(0.81)


@pytest.mark.parametrize("kwargs, argument", [
    ({"decay": 0.0}, "decay"), ({"decay": 1.5}, "decay"), ({"initial": 0.0}, "initial"),
    ({"update_freq": "batch"}, "update_freq"), ({"decay_steps": 0}, "decay_steps"),
])
def test_tau_schedule_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=rf"`{argument}` of bnext_tau_schedule"):
        bnext_tau_schedule(**kwargs)


# ------------------------------------------------------------------------------ conversion


def _bnext_conv_model(tau):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, padding="same", use_bias=False, input_quantizer="hard_sign",
                    kernel_quantizer="bnext_weight", name="hard_binary_conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, x)
    model.get_layer("hard_binary_conv").kernel_quantizer.tau.assign(tau)
    return model


def test_converting_before_tau_is_annealed_names_the_layer_and_tau():
    from kbnn.converters import ConversionError, convert

    model = _bnext_conv_model(0.9 ** 152)
    with pytest.raises(ConversionError) as info:
        convert(model, strict=True)
    assert info.value.layer == "hard_binary_conv"
    message = str(info.value)
    assert "'hard_binary_conv'" in message and "BNextWeight" in message
    assert "tau = 1.10882e-07" in message and "not binary yet" in message


def test_non_strict_conversion_before_annealing_keeps_float_ops():
    from kbnn.converters import convert, inspect, verify

    model = _bnext_conv_model(0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flatbuffer = convert(model, strict=False)
    messages = [str(w.message) for w in caught]
    assert any("hard_binary_conv" in m and "tau = 0.5" in m for m in messages), messages
    report = inspect(flatbuffer)
    assert report.n_binary_convs == 0 and report.count("CONV_2D") == 1
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 32)).astype("float32")
    assert verify(model, flatbuffer, x).max_rel_diff < 1e-4


def test_annealed_weights_convert_to_one_bconv():
    from kbnn.converters import convert, inspect, verify

    model = _bnext_conv_model(bnext_tau(153))
    flatbuffer = convert(model, strict=True)
    assert inspect(flatbuffer).n_binary_convs == 1
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 32)).astype("float32")
    assert verify(model, flatbuffer, x).max_rel_diff < 1e-4
