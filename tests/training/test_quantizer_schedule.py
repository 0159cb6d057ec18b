"""QuantizerSchedule: any named non-trainable quantizer variable driven per epoch or per step
inside a real `model.fit`. Every expected value is written out by hand in the test (the
schedules are simple closed forms), never read back from the callback."""

import keras
import numpy as np
import pytest
from training_helpers import nested_ede_model

from kbnn.blocks import BiRealBlock
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import EDEQuantizer, EDESign, Quantizer, SteSign
from kbnn.training import EDESchedule, QuantizerSchedule


class TauSign(Quantizer):
    """A test quantizer with a per-channel non-trainable temperature `tau` (shape (C,)); its
    forward is x * tau, enough to see the value the schedule assigned."""

    def build(self, input_shape):
        self.tau = self.add_weight(name="tau", shape=(int(input_shape[-1]),),
                                   initializer="ones", trainable=False)
        self.built = True

    def call(self, inputs, training=None):
        return inputs * self.tau


@keras.saving.register_keras_serializable(package="kbnn_tests")
def halving(epoch):
    return 2.0 ** -epoch


def ede_model() -> keras.Model:
    """A nested model with EDESign inputs and LibraSign kernels, then a QuantConv2D."""
    return nested_ede_model(input_quantizer="ede_sign", kernel_quantizer="ste_sign",
                            name="conv")


def quantizers_of(model):
    dense = model.get_layer("inner").layers[-1]
    return {"dense_in": dense.input_quantizer, "dense_kernel": dense.kernel_quantizer,
            "conv_in": model.get_layer("conv").input_quantizer}


class Recorder(keras.callbacks.Callback):
    """Reads `names` of the quantizers at each training step (after the schedule has run, as
    callbacks run in list order) and at each epoch end."""

    def __init__(self, quantizers, names=("t", "k")):
        super().__init__()
        self.quantizers, self.names = quantizers, names
        self.steps, self.epochs = [], []

    def _read(self):
        return {key: tuple(np.asarray(getattr(q, n)).tolist() for n in self.names)
                for key, q in self.quantizers.items()}

    def on_train_batch_begin(self, batch, logs=None):
        self.steps.append(self._read())

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(self._read())


def fit(model, callbacks, epochs=3, samples=16, batch_size=8, **kwargs):
    """16 samples in batches of 8: two steps per epoch."""
    rng = np.random.default_rng(0)
    if not model.compiled:
        model.compile("adam", "mse")
    x = rng.normal(size=(samples, *model.input_shape[1:])).astype(np.float32)
    y = rng.normal(size=(samples, *model.output_shape[1:])).astype(np.float32)
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                     callbacks=callbacks, **kwargs)


def test_per_epoch_schedules_in_fit():
    """t = 0.5 + e, k = 2 (e + 1) at epochs 0, 1, 2 (start, middle, end), on every quantizer,
    the nested model's included; both steps of an epoch see that epoch's value."""
    model = ede_model()
    schedule = QuantizerSchedule({"t": lambda e: 0.5 + e, "k": lambda e: 2.0 * (e + 1)})
    recorder = Recorder(quantizers_of(model))
    history = fit(model, [schedule, recorder])
    expected = [(0.5, 2.0), (1.5, 4.0), (2.5, 6.0)]
    for epoch, (t, k) in enumerate(expected):
        for state in (recorder.epochs[epoch], recorder.steps[2 * epoch],
                      recorder.steps[2 * epoch + 1]):
            for key in ("dense_in", "dense_kernel", "conv_in"):
                assert state[key] == pytest.approx((t, k)), (epoch, key)
    np.testing.assert_allclose(history.history["quantizer_t"], [0.5, 1.5, 2.5])
    np.testing.assert_allclose(history.history["quantizer_k"], [2.0, 4.0, 6.0])


def test_per_step_schedule_counts_global_steps_across_epochs_and_fits():
    """Two steps per epoch, 3 epochs: global steps 0..5, t = 0.1 (s + 1); History keeps the
    value of each epoch's last step; a second fit continues at step 6."""
    model = ede_model()
    schedule = QuantizerSchedule("t", lambda s: 0.1 * (s + 1), update_freq="step",
                                 log_prefix="sched_")
    recorder = Recorder(quantizers_of(model), names=("t",))
    history = fit(model, [schedule, recorder])
    got = [state["conv_in"][0] for state in recorder.steps]
    np.testing.assert_allclose(got, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], rtol=1e-6)
    np.testing.assert_allclose(history.history["sched_t"], [0.2, 0.4, 0.6], rtol=1e-6)
    # k is not scheduled: it keeps EDESign's initial 10
    assert float(model.get_layer("conv").input_quantizer.k) == 10.0

    recorder2 = Recorder(quantizers_of(model), names=("t",))
    fit(model, [schedule, recorder2], epochs=1)
    np.testing.assert_allclose([s["dense_in"][0] for s in recorder2.steps], [0.7, 0.8],
                               rtol=1e-6)


def test_learning_rate_schedule_per_step():
    """PolynomialDecay(1, decay_steps=4, end 0): 1 - s/4 up to step 4, then 0."""
    model = ede_model()
    lrs = keras.optimizers.schedules.PolynomialDecay(1.0, 4, 0.0)
    recorder = Recorder(quantizers_of(model), names=("k",))
    fit(model, [QuantizerSchedule("k", lrs, update_freq="step"), recorder])
    np.testing.assert_allclose([s["dense_kernel"][0] for s in recorder.steps],
                               [1.0, 0.75, 0.5, 0.25, 0.0, 0.0], atol=1e-6)


def test_quantizer_class_filter():
    """Only the EDESign quantizers move; LibraSign's t keeps its initial 0.1."""
    model = ede_model()
    recorder = Recorder(quantizers_of(model), names=("t",))
    fit(model, [QuantizerSchedule("t", lambda e: 3.0 + e, quantizer_class=EDESign), recorder],
        epochs=2)
    assert [s["dense_in"][0] for s in recorder.epochs] == pytest.approx([3.0, 4.0])
    assert [s["conv_in"][0] for s in recorder.epochs] == pytest.approx([3.0, 4.0])
    assert [s["dense_kernel"][0] for s in recorder.epochs] == pytest.approx([0.1, 0.1])


def test_reaches_quantizers_inside_blocks_and_non_scalar_variables():
    """IR-Net quantizers inside a BiRealBlock (both convs' quantizers), and a (C,)-shaped tau
    of a custom quantizer, set per epoch to 1 / (e + 1)."""
    inputs = keras.Input((4, 4, 8))
    x = BiRealBlock(8, input_quantizer="ede_sign", kernel_quantizer="libra_weight",
                    name="irnet")(inputs)
    x = QuantConv2D(3, 1, input_quantizer=TauSign(), name="tau_conv")(x)
    model = keras.Model(inputs, x)
    block = model.get_layer("irnet")
    quantizers = {"in": block.conv.input_quantizer, "kernel": block.conv.kernel_quantizer}
    tau = model.get_layer("tau_conv").input_quantizer
    recorder = Recorder(quantizers, names=("t",))
    taus = []
    record_tau = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: taus.append(np.asarray(tau.tau).copy()))
    history = fit(model, [QuantizerSchedule({"t": lambda e: 0.1 * 10 ** e}),
                          QuantizerSchedule("tau", lambda e: 1.0 / (e + 1), log_prefix=""),
                          recorder, record_tau])
    for state, t in zip(recorder.epochs, [0.1, 1.0, 10.0]):
        assert state["in"][0] == pytest.approx(t) and state["kernel"][0] == pytest.approx(t)
    np.testing.assert_allclose(taus, [[1.0] * 8, [0.5] * 8, [1 / 3] * 8], rtol=1e-6)
    np.testing.assert_allclose(history.history["tau"], [1.0, 0.5, 1 / 3], rtol=1e-6)


def test_warns_naming_the_missing_variable():
    model = ede_model()
    with pytest.warns(UserWarning, match=r"non-trainable variable 'tau'") as record:
        fit(model, [QuantizerSchedule({"t": lambda e: 2.0, "tau": lambda e: 1.0})], epochs=1)
    assert not any("'t'" in str(w.message) for w in record)
    assert float(model.get_layer("conv").input_quantizer.t) == 2.0  # the others still move

    inputs = keras.Input((4,))
    plain = keras.Model(inputs, QuantDense(2, input_quantizer=SteSign())(inputs))
    with pytest.warns(UserWarning, match=r"QuantizerSchedule: no quantizer .* 'k'"):
        fit(plain, [QuantizerSchedule("k", lambda e: 1.0)], epochs=1)


def test_ede_schedule_is_a_quantizer_schedule():
    schedule = EDESchedule(total_epochs=4)
    assert isinstance(schedule, QuantizerSchedule)
    assert schedule.quantizer_class == (EDEQuantizer,)
    assert sorted(schedule.schedules) == ["k", "t"]


def test_config_round_trip_with_serialisable_schedules():
    lrs = keras.optimizers.schedules.CosineDecay(2.0, 10)
    schedule = QuantizerSchedule({"tau": lrs, "t": halving}, update_freq="step",
                                 quantizer_class=(EDESign, EDEQuantizer), log_prefix="q_")
    config = schedule.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(clone) is QuantizerSchedule
    assert clone.get_config() == config
    assert clone.update_freq == "step" and clone.log_prefix == "q_"
    assert clone.quantizer_class == (EDESign, EDEQuantizer)
    assert clone.schedules["t"] is halving
    # cosine decay from 2 over 10 steps: 2 * (1 + cos(pi * 5 / 10)) / 2 = 1 at step 5
    assert clone.value("tau", 5) == pytest.approx(1.0, rel=1e-6)
    assert clone.value("t", 3) == 0.125


def test_plain_callable_config_works_but_does_not_rebuild():
    schedule = QuantizerSchedule("tau", lambda e: 1.0)
    config = schedule.get_config()
    assert config["update_freq"] == "epoch" and config["quantizer_class"] is None
    with pytest.raises(ValueError, match=r"schedule of variable 'tau'.*register_keras_serializ"):
        QuantizerSchedule.from_config(config)


@pytest.mark.parametrize("kwargs, argument", [
    ({"variables": 3, "schedule": halving}, "variables"),
    ({"variables": "", "schedule": halving}, "variables"),
    ({"variables": "not a name", "schedule": halving}, "variables"),
    ({"variables": {}}, "variables"),
    ({"variables": {"t": 0.5}}, "variables"),
    ({"variables": {"t": halving}, "schedule": halving}, "schedule"),
    ({"variables": "t"}, "schedule"),
    ({"variables": "t", "schedule": "cosine"}, "schedule"),
    ({"variables": "t", "schedule": EDESign}, "schedule"),  # a class, not a schedule
    ({"variables": "t", "schedule": halving, "update_freq": "batch"}, "update_freq"),
    ({"variables": "t", "schedule": halving, "quantizer_class": keras.layers.Dense},
     "quantizer_class"),
    ({"variables": "t", "schedule": halving, "quantizer_class": ()}, "quantizer_class"),
    ({"variables": "t", "schedule": halving, "log_prefix": None}, "log_prefix"),
])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=rf"Invalid value for argument `{argument}` of "
                                         rf"QuantizerSchedule\. Expected .* Received "):
        QuantizerSchedule(**kwargs)


@pytest.mark.parametrize("bad", [lambda e: "fast", lambda e: float("nan"), lambda e: [1.0, 2.0]])
def test_schedule_returning_no_number_fails_in_fit(bad):
    with pytest.raises(ValueError, match=r"schedule of variable 't' .* epoch 0"):
        fit(ede_model(), [QuantizerSchedule("t", bad)], epochs=1)
