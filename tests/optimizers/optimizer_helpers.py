"""Small kbnn models and predicates shared by the optimizer tests."""

import keras
import numpy as np

import kbnn

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}


@keras.saving.register_keras_serializable(package="kbnn_tests")
def is_bias(variable) -> bool:
    return variable.path.endswith("bias")


@keras.saving.register_keras_serializable(package="kbnn_tests")
def is_kernel(variable) -> bool:
    return variable.path.endswith("kernel")


def dense_model(batch_norm: bool = True) -> keras.Model:
    """Input(4) -> binary QuantDense(6, bias) -> [BN] -> Dense(3): one binary kernel, the rest
    float."""
    layers = [keras.Input((4,)),
              kbnn.layers.QuantDense(6, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                     name="binary_dense")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers.append(keras.layers.Dense(3, name="float_dense"))
    return keras.Sequential(layers, name="dense_model")


def conv_model(seed: int = 0, batch_norm: bool = True, output_dtype=None) -> keras.Model:
    """A small binary conv net on 8x8x1 inputs (3 binary kernels, float BN/Dense)."""
    keras.utils.set_random_seed(seed)

    def bn():
        return [keras.layers.BatchNormalization()] if batch_norm else []

    return keras.Sequential([
        keras.Input((8, 8, 1)),
        kbnn.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign", use_bias=False),
        *bn(),
        kbnn.layers.QuantConv2D(8, 3, **BINARY),
        *bn(),
        keras.layers.Flatten(),
        kbnn.layers.QuantDense(10, **BINARY),
        keras.layers.Dense(10),
        keras.layers.Activation("softmax", dtype=output_dtype),
    ])


def bop_adam(model, threshold=1e-5, gamma=1e-2, lr=0.01):
    return kbnn.optimizers.CaseOptimizer(
        (kbnn.optimizers.binary_predicate(model),
         kbnn.optimizers.Bop(threshold=threshold, gamma=gamma)),
        default_optimizer=keras.optimizers.Adam(lr))


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 1)).astype("float32"),
            rng.integers(0, 10, n).astype("int64"))


def numpy_weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]
