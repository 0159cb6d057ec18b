"""ReBNN (arXiv 2302.00956), RBONN (arXiv 2209.01542) and ReCU (arXiv 2103.12369) end to end, in
the existing blocks (docs/methods.md, sections 'ReBNN', 'RBONN', 'ReCU'); RBONN in both forms of
its recurrent model (the paper's, the default, and the official code's, `form="code"`).

None of the three has a block of its own: each is a weight quantizer (ReCU also an activation
quantizer) passed to the Bi-Real layout (`BiRealBlock`, the ResNet-18 block of their official
code) and to `ReActNetBlock`. For each method a two-block digits model (BiRealBlock(32) ->
ReActNetBlock(64, strides 2)) trains with `model.fit` (with `OscillationRatio`, and ReCU's tau
schedule), survives `.keras` exactly, converts in strict mode to one `LceBconv2d` per binary
conv, and the flatbuffer agrees with Keras.
"""

import keras
import numpy as np
import pytest
from blocks_helpers import BATCH_SIZE, binary_convs, flatbuffer_ops, random_inputs, two_block_model

from kbnn._keras_compat import flatten_layers
from kbnn.blocks import BiRealBlock, ReActNetBlock
from kbnn.converters import convert, verify
from kbnn.data import load_digits_split
from kbnn.metrics import OscillationRatio
from kbnn.quantizers import RBONNWeight, ReBNNWeight, ReCUWeight
from kbnn.training import ReCUTauSchedule, recu_tau

EPOCHS = 3
# (input quantizer of the Bi-Real block, of the ReActNet block, kernel quantizer, its class)
METHODS = {
    "rebnn": ("approx_sign", "rsign", "rebnn_weight", ReBNNWeight),
    "rbonn": ("approx_sign", "rsign", "rbonn_weight", RBONNWeight),  # the paper's form
    "rbonn_code": ("approx_sign", "rsign", RBONNWeight(form="code"), RBONNWeight),
    "recu": ("recu_sign", "recu_sign", "recu_weight", ReCUWeight),
}


def _model(method: str) -> keras.Model:
    bireal_input, reactnet_input, kernel, _ = METHODS[method]
    return two_block_model(
        BiRealBlock(32, pad_values=1.0, input_quantizer=bireal_input, kernel_quantizer=kernel),
        ReActNetBlock(64, strides=2, input_quantizer=reactnet_input, kernel_quantizer=kernel))


def _quantizers(model, cls) -> list:
    return [layer for layer in flatten_layers(model, include_self=False, recursive=True)
            if isinstance(layer, cls)]


@pytest.fixture(scope="module", params=sorted(METHODS))
def trained(request):
    method = request.param
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = _model(method)
    steps = EPOCHS * -(-len(data.x_train) // BATCH_SIZE)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.PolynomialDecay(1e-2, steps, 0)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [OscillationRatio()] + ([ReCUTauSchedule()] if method == "recu" else [])
    history = model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=EPOCHS,
                        callbacks=callbacks, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), -1) == data.y_test))
    return method, model, history.history, accuracy


def test_trains_in_the_bireal_and_reactnet_blocks(trained):
    method, model, history, accuracy = trained
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert accuracy > 0.8, accuracy  # chance is 0.1
    convs = binary_convs(model)
    assert len(convs) == 4  # Bi-Real: one 3x3; ReActNet (doubling): 3x3 + two 1x1
    cls = METHODS[method][3]
    assert all(isinstance(conv.kernel_quantizer, cls) for conv in convs)
    # OscillationRatio: one series per binary conv, some flips during training
    series = {k: v for k, v in history.items() if k.startswith("oscillation_ratio/")}
    assert sorted(series) == sorted(f"oscillation_ratio/{conv.name}" for conv in convs)
    values = np.array(list(series.values()))
    assert values.shape == (4, EPOCHS) and values.min() >= 0 and values.max() <= 1
    assert values[:, 0].max() > 0


def test_method_state_after_fit(trained):
    method, model, history, _ = trained
    quantizers = _quantizers(model, METHODS[method][3])
    assert len(quantizers) == 4
    if method == "rebnn":
        for quantizer in quantizers:  # recorded by the backward pass inside fit
            assert quantizer.max_grad.numpy().min() > 0
            assert quantizer.gamma.numpy().min() >= 0
        model(random_inputs(4), training=True)
        assert len(model.losses) == 4  # one reconstruction loss per ReBNN quantizer
    elif method == "rbonn":
        for quantizer in quantizers:
            assert quantizer.form == "paper"
            channels = quantizer.u.shape[0]
            assert quantizer.dense_channels == channels - int(channels * 0.6)
            # channels were backtracked and written back (the selection changes from step to
            # step, so over 3 epochs it may have reached every channel)
            assert np.abs(quantizer.backtrack.numpy()).max() > 0
            assert np.abs(quantizer.previous_weight.numpy()).max() > 0
            assert np.any(quantizer.u.numpy() != np.float32(0.2))
        model(random_inputs(4), training=True)
        assert len(model.losses) == 4
    elif method == "rbonn_code":
        for quantizer in quantizers:
            assert quantizer.form == "code"
            assert np.abs(quantizer.previous_gradient.numpy()).max() > 0
            channels = quantizer.u.shape[0]
            assert quantizer.backtracked_channels == int(channels * 0.4)
            assert np.any(quantizer.u.numpy() != np.float32(0.2))
        model(random_inputs(4), training=True)
        assert len(model.losses) == 4
    else:
        expected = [recu_tau(e, EPOCHS) for e in range(EPOCHS)]
        np.testing.assert_allclose(history["recu_tau"], expected, rtol=1e-7)
        for quantizer in quantizers:
            assert float(quantizer.tau.numpy()) == pytest.approx(expected[-1], rel=1e-6)


def test_keras_round_trip_is_exact(trained, tmp_path):
    method, model, _, _ = trained
    path = tmp_path / f"{method}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):  # state variables (gamma, tau, ...) too
        assert a.name == b.name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_strict_conversion_gives_one_bconv_per_binary_conv(trained):
    _, model, _, _ = trained
    flatbuffer = convert(model, strict=True)
    ops = [name for name, _ in flatbuffer_ops(flatbuffer)]
    assert ops.count("LceBconv2d") == len(binary_convs(model)) == 4
    assert ops.count("CONV_2D") == 1  # the float stem only
    report = verify(model, flatbuffer, random_inputs(200))
    assert report.top1_agreement >= 0.99, report.table()
    assert report.max_abs_diff < 1e-3, report.table()
