"""Bop (Helwegen et al., arXiv 1906.02107) against a numpy reference written here: the METHODS.md
§13 point, random multi-step cases, schedules of threshold and gamma, setters, config."""

import keras
import numpy as np
import pytest

from kbnn.optimizers import Bop


def bop_reference(w, m, g, gamma, threshold):
    """One Bop step in float32 numpy: m <- (1 - gamma) m + gamma g; w <- -w where |m| > threshold
    and sign(m) == sign(w) (w read as its sign, sign(0) = +1)."""
    w, m, g = (np.asarray(a, np.float32) for a in (w, m, g))
    gamma, threshold = np.float32(gamma), np.float32(threshold)
    m = (np.float32(1) - gamma) * m + gamma * g
    w = np.where(w >= 0, np.float32(1), np.float32(-1))
    flip = (np.abs(m) > threshold) & (np.sign(m) == w)
    return np.where(flip, -w, w).astype(np.float32), m.astype(np.float32)


def momentum_of(bop, index=0):
    return keras.ops.convert_to_numpy(bop._momentums[index])


def test_methods_reference_point():
    # METHODS.md §13: gamma=1e-2, tau=1e-6, m0=0, w=[1,-1,1], g=[1e-3,1e-3,-1e-3]
    # -> m=[1e-5,1e-5,-1e-5], w=[-1,-1,1].
    w = keras.Variable(np.array([1.0, -1.0, 1.0], np.float32))
    bop = Bop(threshold=1e-6, gamma=1e-2)
    bop.apply([np.array([1e-3, 1e-3, -1e-3], np.float32)], [w])
    np.testing.assert_array_equal(w.numpy(), [-1.0, -1.0, 1.0])
    np.testing.assert_allclose(momentum_of(bop), [1e-5, 1e-5, -1e-5], rtol=1e-6)
    assert int(bop.iterations.numpy()) == 1


@pytest.mark.parametrize("seed", range(4))
def test_random_steps_match_numpy(seed):
    rng = np.random.default_rng(seed)
    shapes = [(3, 3, 4, 8), (17,), (5, 6)]
    gamma = float(rng.choice([1e-3, 1e-2, 0.1, 0.5]))
    threshold = float(rng.choice([0.0, 1e-6, 1e-4, 1e-3]))
    init = [rng.choice([-1.0, 1.0], size=s).astype(np.float32) for s in shapes]
    variables = [keras.Variable(v) for v in init]
    bop = Bop(threshold=threshold, gamma=gamma)
    w_ref = [v.copy() for v in init]
    m_ref = [np.zeros(s, np.float32) for s in shapes]
    for _ in range(6):
        grads = [(rng.normal(size=s) * 10.0 ** rng.uniform(-5, -1, size=s)).astype(np.float32)
                 for s in shapes]
        bop.apply(grads, variables)
        for i, g in enumerate(grads):
            w_ref[i], m_ref[i] = bop_reference(w_ref[i], m_ref[i], g, gamma, threshold)
    for i, v in enumerate(variables):
        m = momentum_of(bop, i)
        np.testing.assert_allclose(m, m_ref[i], rtol=1e-5, atol=1e-12)
        # Compare flips away from exact ties |m| == threshold (none occur with these draws).
        clear = np.abs(np.abs(m_ref[i]) - threshold) > 1e-6 * max(threshold, 1e-12)
        np.testing.assert_array_equal(v.numpy()[clear], w_ref[i][clear])
        assert set(np.unique(v.numpy())) <= {-1.0, 1.0}
    assert int(bop.iterations.numpy()) == 6


def test_latent_values_are_read_as_their_sign():
    """A variable that is not binary yet becomes its sign (sign(0) = +1) or the flip of it."""
    w = keras.Variable(np.array([0.3, -0.2, 0.0, 0.0, -0.7], np.float32))
    bop = Bop(threshold=0.0, gamma=1.0)
    bop.apply([np.array([1.0, 1.0, 1.0, -1.0, 0.0], np.float32)], [w])
    # signs [1, -1, 1, 1, -1]; m = g; flip where m * sign > 0.
    np.testing.assert_array_equal(w.numpy(), [-1.0, -1.0, -1.0, 1.0, -1.0])


def test_threshold_is_strict():
    w = keras.Variable(np.array([1.0, 1.0], np.float32))
    bop = Bop(threshold=0.5, gamma=1.0)
    bop.apply([np.array([0.5, 0.5000001], np.float32)], [w])
    np.testing.assert_array_equal(w.numpy(), [1.0, -1.0])


def test_schedules_of_threshold_and_gamma_follow_iterations():
    gamma_schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1, 3], [0.5, 0.1, 0.01])
    threshold_schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5)
    bop = Bop(threshold=threshold_schedule, gamma=gamma_schedule)
    rng = np.random.default_rng(7)
    w0 = rng.choice([-1.0, 1.0], size=(64,)).astype(np.float32)
    w = keras.Variable(w0)
    w_ref, m_ref = w0.copy(), np.zeros(64, np.float32)
    for step in range(5):
        gamma = float(gamma_schedule(step))
        threshold = float(threshold_schedule(step))
        np.testing.assert_allclose(float(bop.gamma), gamma)
        np.testing.assert_allclose(float(bop.threshold), threshold, rtol=1e-6)
        g = rng.normal(scale=0.05, size=64).astype(np.float32)
        bop.apply([g], [w])
        w_ref, m_ref = bop_reference(w_ref, m_ref, g, gamma, threshold)
        np.testing.assert_allclose(momentum_of(bop), m_ref, rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(w.numpy(), w_ref)


def test_float_hyperparameters_are_settable_variables():
    bop = Bop(threshold=1e-6, gamma=1e-3)
    assert isinstance(bop.gamma, keras.Variable) and isinstance(bop.threshold, keras.Variable)
    bop.gamma = 0.25
    bop.threshold = 0.0
    assert float(bop.gamma.numpy()) == 0.25 and float(bop.threshold.numpy()) == 0.0
    w = keras.Variable(np.array([1.0, -1.0], np.float32))
    bop.apply([np.array([1.0, 1.0], np.float32)], [w])  # m = 0.25 g
    np.testing.assert_allclose(momentum_of(bop), [0.25, 0.25])
    np.testing.assert_array_equal(w.numpy(), [-1.0, -1.0])
    with pytest.raises(ValueError, match="gamma"):
        bop.gamma = 2.0
    with pytest.raises(TypeError, match="schedule"):
        bop.gamma = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    scheduled = Bop(gamma=keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5))
    with pytest.raises(TypeError, match="cannot be set"):
        scheduled.gamma = 1e-4


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": -1e-3}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": 1.5}, "gamma"),
    ({"gamma": "fast"}, "gamma"),
    ({"learning_rate": 0.1}, "learning_rate"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Bop(**kwargs)


def test_config_round_trip_with_and_without_schedules():
    plain = Bop(threshold=1e-5, gamma=2e-3, name="bop_a", clipnorm=1.0)
    config = plain.get_config()
    assert "learning_rate" not in config
    assert config["threshold"] == pytest.approx(1e-5) and config["gamma"] == pytest.approx(2e-3)
    again = Bop.from_config(config)
    assert again.name == "bop_a" and again.clipnorm == 1.0
    assert float(again.gamma.numpy()) == pytest.approx(2e-3)

    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.5)
    scheduled = Bop(gamma=schedule)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(scheduled))
    assert isinstance(restored, Bop)
    assert isinstance(restored._gamma, keras.optimizers.schedules.ExponentialDecay)
    assert restored._gamma.get_config() == schedule.get_config()
    assert float(restored.threshold.numpy()) == pytest.approx(1e-8)


def test_state_is_saved_with_the_optimizer():
    """Threshold, gamma and momentum are optimizer variables (what a .keras file stores)."""
    bop = Bop(threshold=1e-6, gamma=1e-3)
    w = keras.Variable(np.ones(4, np.float32))
    bop.apply([np.full(4, 1e-4, np.float32)], [w])
    names = [v.name for v in bop.variables]
    assert {"iteration", "threshold", "gamma"} <= set(names)
    assert any("momentum" in n for n in names)
