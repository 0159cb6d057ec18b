"""A training script written in larq's style (larq's layer arguments, its CaseOptimizer call form
with `Bop.is_binary_variable`, its summary and scheduler) runs on scikit-learn's digits after
changing only the import to kbnn.compat.larq; the model it builds is a plain kbnn model that
saves, loads and converts."""

import time

import numpy as np
import tensorflow as tf

import kbnn
import kbnn.compat.larq as lq
from kbnn.data import load_digits_split


def larq_script(x_train, y_train, epochs=6):
    """larq's own example style; only `import larq as lq` became the import above."""
    kwargs = dict(input_quantizer="ste_sign",  # noqa: C408 (larq's style)
                  kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip",
                  use_bias=False)

    model = tf.keras.models.Sequential([
        tf.keras.Input((8, 8, 1)),
        # In the first layer we only quantize the weights and not the input
        lq.layers.QuantConv2D(32, (3, 3),
                              kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip",
                              use_bias=False),
        tf.keras.layers.BatchNormalization(scale=False),

        lq.layers.QuantConv2D(64, (3, 3), padding="same", pad_values=1.0, **kwargs),
        tf.keras.layers.MaxPooling2D((2, 2)),
        tf.keras.layers.BatchNormalization(scale=False),

        tf.keras.layers.Flatten(),
        lq.layers.QuantDense(64, **kwargs),
        tf.keras.layers.BatchNormalization(scale=False),
        lq.layers.QuantDense(10, **kwargs),
        tf.keras.layers.BatchNormalization(scale=False),
        tf.keras.layers.Activation("softmax"),
    ])
    lines = []
    lq.models.summary(model, print_fn=lines.append)

    bop = lq.optimizers.Bop(threshold=1e-6, gamma=1e-3)
    optimizer = lq.optimizers.CaseOptimizer(
        (lq.optimizers.Bop.is_binary_variable, bop),
        default_optimizer=tf.keras.optimizers.Adam(0.01),
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks = [lq.callbacks.HyperparameterScheduler(lambda epoch: 1e-3 * 0.5 ** epoch,
                                                      "gamma", bop)]
    history = model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0,
                        callbacks=callbacks)
    return model, optimizer, bop, history, lines


def test_larq_style_script_trains_on_digits(tmp_path):
    split = load_digits_split()
    start = time.perf_counter()
    model, optimizer, bop, history, lines = larq_script(split.x_train, split.y_train)
    elapsed = time.perf_counter() - start
    _, accuracy = model.evaluate(split.x_test, split.y_test, verbose=0)
    assert accuracy > 0.85, accuracy
    assert elapsed < 60, elapsed
    assert any(line.startswith("Total parameters") for line in lines)
    np.testing.assert_allclose(history.history["gamma"], [1e-3 * 0.5**e for e in range(6)],
                               rtol=1e-6)
    # Bop owns exactly the four binary kernels, which hold +-1; Adam owns the batch norms.
    routing = optimizer.routing()
    owned = sorted(path for path, name in routing.items() if name == bop.name)
    assert owned == sorted(v.path for v in kbnn.optimizers.binary_variables(model))
    assert len(owned) == 4
    assert all(set(np.unique(v.numpy())) <= {-1.0, 1.0}
               for v in kbnn.optimizers.binary_variables(model))
    # a plain kbnn model: saves, loads (optimizer included) and converts
    assert all(type(layer).__module__.startswith("kbnn.layers") for layer in model.layers
               if "Quant" in type(layer).__name__)
    path = tmp_path / "larq_style.keras"
    model.save(path)
    restored = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(restored.predict(split.x_test, verbose=0),
                                  model.predict(split.x_test, verbose=0))
    restored.fit(split.x_train[:64], split.y_train[:64], epochs=1, verbose=0)
    result = kbnn.converters.convert(model, strict=True, return_report=True)
    assert result.report.n_binary_convs == 3
