"""EDESchedule (IR-Net, METHODS.md §6.2, §13): t and k per epoch inside a real `fit`."""

import math

import keras
import numpy as np
import pytest
from reference_values import EDE_GRAD_END, EDE_GRAD_MIDDLE, EDE_GRAD_START, X, value_and_grad
from training_helpers import nested_ede_model

from kbnn.quantizers import AdaBinWeight
from kbnn.training import EDESchedule, ede_schedule_values


def ede_model() -> keras.Model:
    """Dense EDESign/LibraSign layer inside a nested model, then an AdaBin conv."""
    return nested_ede_model(input_quantizer="ste_sign", kernel_quantizer=AdaBinWeight())


def all_ede_quantizers(model):
    inner = model.get_layer("inner").layers[-1]
    conv = model.layers[-2]
    return [inner.input_quantizer, inner.kernel_quantizer, conv.kernel_quantizer]


class Recorder(keras.callbacks.Callback):
    """At each epoch end: (t, k) of every EDE quantizer and the EDESign gradient at X."""

    def __init__(self, quantizers):
        super().__init__()
        self.quantizers = quantizers
        self.states, self.grads = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.states.append([(float(q.t.numpy()), float(q.k.numpy())) for q in self.quantizers])
        self.grads.append(value_and_grad(self.quantizers[0], X)[1])


def fit(model, epochs, schedule):
    recorder = Recorder(all_ede_quantizers(model))
    rng = np.random.default_rng(0)
    model.compile("adam", "mse")
    history = model.fit(rng.normal(size=(16, 4)).astype(np.float32),
                        rng.normal(size=(16, 2)).astype(np.float32),
                        batch_size=8, epochs=epochs, verbose=0, callbacks=[schedule, recorder])
    return recorder, history


def test_schedule_values_by_hand():
    assert ede_schedule_values(0, 4) == pytest.approx((0.1, 10.0))
    assert ede_schedule_values(1, 4) == pytest.approx((10 ** -0.5, 10 ** 0.5))
    assert ede_schedule_values(2, 4) == pytest.approx((1.0, 1.0))
    assert ede_schedule_values(3, 4) == pytest.approx((10 ** 0.5, 1.0))
    assert ede_schedule_values(9, 4) == pytest.approx((10.0, 1.0))  # clipped at t_max
    # the official CIFAR code's t_min = 1e-3: t = 1e-3 * 10^(4 * i/N)
    assert ede_schedule_values(1, 2, t_min=1e-3, t_max=10.0) == pytest.approx((0.1, 10.0))


def test_start_middle_end_of_schedule_in_fit():
    """total_epochs=2 over 3 epochs: i/N = 0, 0.5, 1 -> t = 0.1, 1, 10 (METHODS.md §13)."""
    model = ede_model()
    recorder, history = fit(model, 3, EDESchedule(t_min=0.1, t_max=10.0, total_epochs=2))
    expected = [(0.1, 10.0), (1.0, 1.0), (10.0, 1.0)]
    for states, (t, k) in zip(recorder.states, expected):
        for state in states:  # every quantizer, the nested ones included
            assert state == pytest.approx((t, k), rel=1e-6)
    np.testing.assert_allclose(recorder.grads[0], EDE_GRAD_START, atol=1e-3)
    np.testing.assert_allclose(recorder.grads[1], EDE_GRAD_MIDDLE, atol=1e-4)
    np.testing.assert_allclose(recorder.grads[2], EDE_GRAD_END, atol=1e-4)
    np.testing.assert_allclose(history.history["ede_t"], [0.1, 1.0, 10.0], rtol=1e-6)
    np.testing.assert_allclose(history.history["ede_k"], [10.0, 1.0, 1.0], rtol=1e-6)


def test_total_epochs_defaults_to_fit_epochs_and_state_is_saved(tmp_path):
    model = ede_model()
    recorder, _ = fit(model, 4, EDESchedule())
    t_expected = [0.1 * 10 ** (2 * i / 4) for i in range(4)]
    for states, t in zip(recorder.states, t_expected):
        assert states[0] == pytest.approx((t, max(1 / t, 1.0)), rel=1e-6)
    np.testing.assert_allclose(recorder.grads[2], EDE_GRAD_MIDDLE, atol=1e-4)  # epoch 2 of 4: t = 1
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for q in all_ede_quantizers(loaded):
        assert (float(q.t.numpy()), float(q.k.numpy())) == pytest.approx((10 ** 0.5, 1.0), rel=1e-6)
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_callback_serialises():
    schedule = EDESchedule(t_min=1e-3, t_max=10.0, total_epochs=50)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(clone, EDESchedule)
    assert clone.get_config() == {"t_min": 1e-3, "t_max": 10.0, "total_epochs": 50}
    assert math.isclose(ede_schedule_values(25, 50, clone.t_min, clone.t_max)[0], 0.1)


@pytest.mark.parametrize("kwargs,arg", [({"t_min": 0.0}, "t_min"), ({"t_max": 0.05}, "t_max"),
                                        ({"total_epochs": 0}, "total_epochs")])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}` of EDESchedule"):
        EDESchedule(**kwargs)


@pytest.mark.parametrize("total_epochs", [0, -3, 2.0, True, None])
def test_schedule_values_bad_total_epochs(total_epochs):
    """A zero (or non-integer) N is a ValueError naming the argument, not a ZeroDivisionError."""
    with pytest.raises(ValueError, match="`total_epochs` of ede_schedule_values.*"
                                         rf"Received total_epochs={total_epochs!r}\."):
        ede_schedule_values(0, total_epochs)


@pytest.mark.parametrize("total_epochs", [-1, 2.5, False, "4"])
def test_bad_total_epochs_of_callback(total_epochs):
    with pytest.raises(ValueError, match="`total_epochs` of EDESchedule"):
        EDESchedule(total_epochs=total_epochs)


def test_warns_without_ede_quantizers():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", "mse")
    with pytest.warns(UserWarning, match="no EDE quantizer"):
        model.fit(np.zeros((4, 4)), np.zeros((4, 2)), epochs=1, verbose=0,
                  callbacks=[EDESchedule()])
