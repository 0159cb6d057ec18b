"""Two-step training: `to_step2` turns a step-1 model (binary activations, float weights) into its
step-2 model with every weight carried over and the binary-input layers' weights now quantized
(outputs checked against numpy and against a model built binary from the start); `to_step1` is
its inverse; weight decay is excluded exactly on the binary latent weights (one AdamW step
against numpy)."""

import keras
import numpy as np
import pytest

import kbnn
from kbnn.optimizers import binary_variables
from kbnn.training import (
    exclude_binary_weights_from_decay,
    replace_weight_quantizers,
    to_step1,
    to_step2,
    weight_decay_exclusions,
)


def sign(x):
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


def dense_step1():
    """Float first layer, binary-input second layer with float weights, float classifier."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        kbnn.layers.QuantDense(8, name="first"),
        kbnn.layers.QuantDense(5, input_quantizer="ste_sign", name="binary"),
        keras.layers.Dense(3, name="classifier"),
    ], name="step1")


def test_dense_step2_matches_numpy(rng):
    step1 = dense_step1()
    step2 = to_step2(step1, "ste_sign")
    assert step2 is not step1 and not step2.compiled
    # every weight carried over exactly (the float kernel is now the latent weight)
    assert len(step2.weights) == len(step1.weights)
    for a, b in zip(step1.weights, step2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    first, binary, classifier = step2.layers
    assert first.kernel_quantizer is None and first.input_quantizer is None
    assert isinstance(binary.kernel_quantizer, kbnn.quantizers.SteSign)
    assert step1.layers[1].kernel_quantizer is None  # the step-1 model is unchanged

    x = rng.normal(size=(7, 6)).astype(np.float32)
    h = x @ first.kernel.numpy() + first.bias.numpy()
    h = sign(h) @ sign(binary.kernel.numpy()) + binary.bias.numpy()
    expected = h @ classifier.kernel.numpy() + classifier.bias.numpy()
    np.testing.assert_allclose(step2(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    # step 1 used the float kernel of that layer
    h1 = x @ first.kernel.numpy() + first.bias.numpy()
    h1 = sign(h1) @ binary.kernel.numpy() + binary.bias.numpy()
    np.testing.assert_allclose(step1(x).numpy(), h1 @ classifier.kernel.numpy()
                               + classifier.bias.numpy(), rtol=1e-5, atol=1e-5)
    assert [v.path for v in binary_variables(step2)] == [binary.kernel.path]
    assert binary_variables(step1) == []


def conv_step1(kernel_quantizer=None):
    """Functional model with kbnn blocks (RSign thresholds, BN statistics), conv layers of each
    kind and a nested Sequential."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 16))
    x = kbnn.blocks.ReActNetBlock(16, kernel_quantizer=kernel_quantizer, name="block1")(inputs)
    x = kbnn.blocks.ReActNetBlock(32, strides=2, kernel_quantizer=kernel_quantizer,
                                  name="block2")(x)
    x = kbnn.blocks.BiRealBlock(32, kernel_quantizer=kernel_quantizer, name="bireal")(x)
    x = kbnn.layers.QuantDepthwiseConv2D(3, padding="same", input_quantizer="ste_sign",
                                         depthwise_quantizer=kernel_quantizer, name="dw")(x)
    nested = keras.Sequential([
        keras.Input((4, 4, 32)),
        kbnn.layers.QuantSeparableConv2D(32, 3, padding="same", input_quantizer="ste_sign",
                                         depthwise_quantizer=kernel_quantizer,
                                         pointwise_quantizer=kernel_quantizer, name="sep"),
        keras.layers.BatchNormalization(name="nested_bn"),
    ], name="nested")
    x = nested(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="classifier")(x)
    return keras.Model(inputs, outputs, name="convnet")


def randomise(model, rng):
    """Non-trivial values everywhere (thresholds, BN statistics), deterministic."""
    for weight in model.weights:
        value = rng.normal(size=weight.shape).astype(np.float32) * 0.5
        if "variance" in weight.path:
            value = np.abs(value) + 0.5
        weight.assign(value)


def test_blocks_and_nested_models_match_a_binary_model(rng):
    step1 = conv_step1()
    randomise(step1, rng)
    step2 = to_step2(step1, "scaled_sign")
    for a, b in zip(step1.weights, step2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the same architecture built binary from the start, given the same weights
    reference = conv_step1("scaled_sign")
    reference.set_weights(step1.get_weights())
    x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(step2(x, training=False).numpy(),
                               reference(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(step2(x, training=False).numpy(),
                           step1(x, training=False).numpy())
    # every weight quantizer of the binary-input layers is set: 3x3 + 1x1 (block1), 3x3 + two
    # 1x1 (block2), 3x3 (bireal), depthwise, separable depthwise + pointwise
    assert len(binary_variables(step2)) == 2 + 3 + 1 + 1 + 2
    assert len(weight_decay_exclusions(step2)) == len(binary_variables(reference))
    # the shortcut's real 1x1 conv and the classifier stay float
    kinds = {v.path.split("/")[-2] for v in binary_variables(step2)}
    assert not any("shortcut" in k or "classifier" in k for k in kinds)


def test_to_step1_is_the_inverse(rng):
    step1 = conv_step1()
    randomise(step1, rng)
    back = to_step1(to_step2(step1, "scaled_sign"))
    x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(back(x, training=False).numpy(),
                               step1(x, training=False).numpy(), rtol=1e-6, atol=1e-6)
    assert binary_variables(back) == []


def test_select_and_errors(rng):
    step1 = dense_step1()
    with pytest.raises(ValueError, match="no layer"):
        to_step2(step1, "ste_sign", select=lambda config: config["name"] == "first")
    with pytest.raises(ValueError, match="`kernel_quantizer`"):
        to_step2(step1, None)
    with pytest.raises(ValueError, match="unknown quantizer"):
        to_step2(step1, "no_such_quantizer")
    unbuilt = keras.Sequential([kbnn.layers.QuantDense(3, input_quantizer="ste_sign")])
    with pytest.raises(ValueError, match="not built"):
        to_step2(unbuilt, "ste_sign")
    with pytest.raises(ValueError, match="no layer"):
        to_step2(to_step2(step1, "ste_sign"), "ste_sign")  # already binary
    # the general form: any selection, any weight quantizer
    ternary = replace_weight_quantizers(step1, "ste_tern",
                                        select=lambda config: config["name"] == "first")
    assert isinstance(ternary.layers[0].kernel_quantizer, kbnn.quantizers.SteTern)
    assert ternary.layers[1].kernel_quantizer is None


def test_adamw_step_excludes_exactly_the_binary_latent_weights(rng):
    import tensorflow as tf

    model = to_step2(dense_step1(), "ste_sign")
    binary = binary_variables(model)
    assert len(binary) == 1
    lr, wd, beta_1, beta_2, eps = 0.1, 0.5, 0.9, 0.999, 1e-7
    optimizer = exclude_binary_weights_from_decay(
        keras.optimizers.AdamW(lr, weight_decay=wd, beta_1=beta_1, beta_2=beta_2, epsilon=eps),
        model)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    variables = model.trainable_variables
    before = [v.numpy().astype(np.float64) for v in variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    for variable, w, g in zip(variables, before, grads):
        g = g.numpy().astype(np.float64)
        decayed = w if any(variable is b for b in binary) else w - lr * wd * w
        m, v = (1 - beta_1) * g, (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2) / (1 - beta_1)
        expected = decayed - alpha * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=variable.path)
    # and the binary latent weight really differs from what decay would have given
    assert len(variables) == 6


def test_exclusion_errors():
    model = to_step2(dense_step1(), "ste_sign")
    with pytest.raises(TypeError, match="`optimizer`"):
        exclude_binary_weights_from_decay("adamw", model)
    optimizer = keras.optimizers.AdamW(0.1)
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        exclude_binary_weights_from_decay(optimizer, model)
