"""kbnn.optimizers.HyperparameterScheduler: per-epoch and per-step schedules of Bop's gamma and
threshold inside a CaseOptimizer, the two schedule signatures, and its errors."""

import keras
import numpy as np
import pytest
from optimizer_helpers import conv_model, data

from kbnn.optimizers import Bop, CaseOptimizer, HyperparameterScheduler, binary_predicate


def compiled(bop):
    model = conv_model()
    optimizer = CaseOptimizer((binary_predicate(model), bop),
                              default_optimizer=keras.optimizers.Adam(0.01))
    model.compile(optimizer, "sparse_categorical_crossentropy")
    return model


class Record(keras.callbacks.Callback):
    """Reads `bop.<name>` at the start of every batch (after the scheduler has set it)."""

    def __init__(self, bop, name):
        super().__init__()
        self.bop, self.name, self.values = bop, name, []

    def on_train_batch_begin(self, batch, logs=None):
        self.values.append(float(getattr(self.bop, self.name).numpy()))


def test_epoch_schedule_sets_gamma_and_logs_it():
    x, y = data(32)
    bop = Bop(threshold=1e-6, gamma=1e-3)
    model = compiled(bop)
    record = Record(bop, "gamma")
    scheduler = HyperparameterScheduler(lambda epoch: 1e-2 * 0.5 ** epoch, "gamma", bop)
    # The recorder runs after the scheduler (callbacks run in order).
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[scheduler, record])
    np.testing.assert_allclose(record.values, [1e-2] * 2 + [5e-3] * 2 + [2.5e-3] * 2, rtol=1e-6)
    np.testing.assert_allclose(history.history["gamma"], [1e-2, 5e-3, 2.5e-3], rtol=1e-6)


def test_step_schedule_uses_the_optimizers_iterations():
    x, y = data(32)
    bop = Bop(threshold=1e-6, gamma=1e-3)
    model = compiled(bop)
    record = Record(bop, "threshold")
    scheduler = HyperparameterScheduler(lambda step: 1e-6 * (step + 1), "threshold", bop,
                                        update_freq="step")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[scheduler, record])
    np.testing.assert_allclose(record.values, [1e-6 * (i + 1) for i in range(4)], rtol=1e-5)


def test_schedule_of_index_and_current_value(capsys):
    x, y = data(16)
    bop = Bop(gamma=1e-2)
    model = compiled(bop)
    scheduler = HyperparameterScheduler(lambda epoch, gamma: gamma / 10, "gamma", bop, verbose=1)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[scheduler])
    assert float(bop.gamma.numpy()) == pytest.approx(1e-4)
    assert "setting gamma to 0.0001" in capsys.readouterr().out


def test_default_optimizer_is_the_models():
    x, y = data(16)
    model = conv_model()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[HyperparameterScheduler(lambda epoch: 0.1 / (epoch + 1),
                                                 "learning_rate")])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)


def test_errors():
    x, y = data(16)
    bop = Bop()
    model = compiled(bop)
    with pytest.raises(ValueError, match="no hyperparameter 'beta'"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[HyperparameterScheduler(lambda e: 0.1, "beta", bop)])
    scheduled = Bop(gamma=keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5))
    model = compiled(scheduled)
    with pytest.raises(TypeError, match="cannot be set"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[HyperparameterScheduler(lambda e: 0.1, "gamma", scheduled)])
    with pytest.raises(ValueError, match="update_freq"):
        HyperparameterScheduler(lambda e: 0.1, "gamma", bop, update_freq="batch")
    with pytest.raises(TypeError, match="schedule"):
        HyperparameterScheduler(0.1, "gamma", bop)
    with pytest.raises(ValueError, match="hyperparameter"):
        HyperparameterScheduler(lambda e: 0.1, "not a name", bop)
