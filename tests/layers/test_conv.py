"""Quantized convolutions against a numpy reference written here (explicit loops).

The reference binarizes with sign(0) = +1, pads with numpy using TensorFlow's SAME rule (the odd
pixel after) or the causal rule, and convolves with loops over output and kernel positions.
"""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_values import value_and_grads

import kbnn
from kbnn.layers import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D, QuantSeparableConv2D

BINARY = {"input_quantizer": "ste_sign"}


# ----------------------------------------------------------------------------- numpy reference
def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def tf_same_pads(size, k, s, d):
    """TensorFlow SAME: out = ceil(size / s); the odd pixel of the total goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return (total // 2, total - total // 2)


def np_pad(x, padding, kernel_size, strides, dilation, value):
    """Pad the spatial axes of a channels-last x for a VALID convolution."""
    spatial = x.shape[1:-1]
    if padding == "valid":
        pads = [(0, 0)] * len(spatial)
    elif padding == "causal":
        pads = [((kernel_size[0] - 1) * dilation[0], 0)]
    else:
        pads = [tf_same_pads(n, k, s, d)
                for n, k, s, d in zip(spatial, kernel_size, strides, dilation)]
    return np.pad(x, [(0, 0)] + pads + [(0, 0)], constant_values=value)


def _windows(xp, kernel_size, strides, dilation):
    """Yield (output index, kernel index, input slab (N, C)) for a padded channels-last xp."""
    rank = len(kernel_size)
    out = [(xp.shape[1 + i] - (kernel_size[i] - 1) * dilation[i] - 1) // strides[i] + 1
           for i in range(rank)]
    for oidx in np.ndindex(*out):
        for kidx in np.ndindex(*kernel_size):
            pos = tuple(oidx[i] * strides[i] + kidx[i] * dilation[i] for i in range(rank))
            yield oidx, kidx, xp[(slice(None),) + pos]
    return out


def np_output_size(xp, kernel_size, strides, dilation):
    return tuple((xp.shape[1 + i] - (kernel_size[i] - 1) * dilation[i] - 1) // strides[i] + 1
                 for i in range(len(kernel_size)))


def np_conv(xp, w, strides, dilation, groups=1):
    """Grouped convolution of padded xp (N, *S, C) with w (*K, C / groups, F), VALID."""
    ks = w.shape[:-2]
    f = w.shape[-1]
    cg, fg = xp.shape[-1] // groups, f // groups
    out = np.zeros((xp.shape[0],) + np_output_size(xp, ks, strides, dilation) + (f,))
    for oidx, kidx, slab in _windows(xp, ks, strides, dilation):
        for g in range(groups):
            out[(slice(None),) + oidx + (slice(g * fg, (g + 1) * fg),)] += (
                slab[:, g * cg:(g + 1) * cg] @ w[kidx + (slice(None), slice(g * fg, (g + 1) * fg))]
            )
    return out


def np_depthwise(xp, w, strides, dilation):
    """Depthwise conv of xp (N, H, W, C) with w (kh, kw, C, M); output channel c * M + m."""
    ks = w.shape[:2]
    c, m = w.shape[2:]
    out = np.zeros((xp.shape[0],) + np_output_size(xp, ks, strides, dilation) + (c * m,))
    for oidx, kidx, slab in _windows(xp, ks, strides, dilation):
        out[(slice(None),) + oidx] += (slab[:, :, None] * w[kidx][None]).reshape(len(slab), c * m)
    return out


def random_input(shape, rng):
    x = rng.normal(size=shape).astype("float32")
    x.flat[::7] = 0.0  # sign(0) must be +1
    return x


def assert_close(actual, expected):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- forward
CONV2D_CASES = [
    {"kernel_size": k, "strides": s, "padding": p, "pad_values": v}
    for k in (3, 2) for s in (1, 2) for p in ("valid", "same") for v in (0.0, 1.0)
] + [
    {"kernel_size": 3, "dilation_rate": 2, "padding": "same", "pad_values": 1.0},
    {"kernel_size": 2, "dilation_rate": 2, "padding": "same", "pad_values": 0.0},
    {"kernel_size": 3, "dilation_rate": 2, "padding": "valid"},
    {"kernel_size": 3, "groups": 2, "padding": "same", "pad_values": 1.0},
    {"kernel_size": 2, "groups": 2, "strides": 2, "padding": "same", "pad_values": 0.0},
    {"kernel_size": 3, "strides": 2, "padding": "same", "pad_values": 1.0, "use_bias": True,
         "activation": "relu"},
]


def _tuple(v, rank):
    return (v,) * rank if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("shape", [(2, 7, 8, 4), (1, 6, 5, 4)], ids=["7x8", "6x5"])
@pytest.mark.parametrize("case", CONV2D_CASES, ids=str)
def test_conv2d_forward(case, shape, rng):
    x = random_input(shape, rng)
    case = dict(case)
    use_bias = case.pop("use_bias", False)
    layer = QuantConv2D(4, **case, use_bias=use_bias, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign")
    layer.build(shape)
    w = rng.normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(w)
    if use_bias:
        b = rng.normal(size=(4,)).astype("float32")
        layer.bias.assign(b)
    k, s = _tuple(case["kernel_size"], 2), _tuple(case.get("strides", 1), 2)
    d = _tuple(case.get("dilation_rate", 1), 2)
    xp = np_pad(np_sign(x), case["padding"], k, s, d, case.get("pad_values", 0.0))
    expected = np_conv(xp, np_sign(w), s, d, groups=case.get("groups", 1))
    if use_bias:
        expected = np.maximum(expected + b, 0.0)
    assert_close(layer(x), expected)


def test_pad_values_changes_only_the_border(rng):
    """Sanity check that the reference tells the two padding modes apart."""
    x = random_input((1, 6, 6, 4), rng)
    outs = []
    for v in (0.0, 1.0):
        layer = QuantConv2D(2, 3, padding="same", pad_values=v, input_quantizer="ste_sign",
                            kernel_quantizer="ste_sign", kernel_initializer="ones")
        outs.append(keras.ops.convert_to_numpy(layer(x)))
    diff = outs[1] - outs[0]
    np.testing.assert_array_equal(diff[:, 1:-1, 1:-1], 0.0)
    # All-ones kernel, 4 input channels: a corner pixel sees 5 padded +1 values per channel,
    # an edge pixel 3.
    assert diff[0, 0, 0, 0] == 4 * 5.0 and diff[0, 0, 2, 0] == 4 * 3.0


CONV1D_CASES = [
    {"kernel_size": k, "strides": s, "padding": p, "pad_values": v}
    for k in (3, 2) for s in (1, 2) for p in ("valid", "same", "causal") for v in (0.0, 1.0)
] + [
    {"kernel_size": 3, "dilation_rate": 2, "padding": "causal", "pad_values": 1.0},
    {"kernel_size": 3, "dilation_rate": 2, "padding": "causal", "pad_values": 0.0},
    {"kernel_size": 2, "dilation_rate": 2, "padding": "same", "pad_values": 1.0},
    {"kernel_size": 3, "groups": 2, "padding": "causal", "pad_values": 1.0},
]


@pytest.mark.parametrize("length", [7, 8])
@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
def test_conv1d_forward(case, length, rng):
    x = random_input((2, length, 4), rng)
    layer = QuantConv1D(4, **case, use_bias=False, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign")
    layer.build(x.shape)
    w = rng.normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(w)
    k, s = (case["kernel_size"],), (case.get("strides", 1),)
    d = (case.get("dilation_rate", 1),)
    xp = np_pad(np_sign(x), case["padding"], k, s, d, case["pad_values"])
    expected = np_conv(xp, np_sign(w), s, d, groups=case.get("groups", 1))
    assert_close(layer(x), expected)


DEPTHWISE_CASES = [
    {"kernel_size": k, "strides": s, "padding": p, "pad_values": v, "depth_multiplier": 2 if k == 3 else 1}
    for k in (3, 2) for s in (1, 2) for p in ("valid", "same") for v in (0.0, 1.0)
] + [
    {"kernel_size": 3, "dilation_rate": 2, "padding": "same", "pad_values": 1.0, "depth_multiplier": 2},
    {"kernel_size": 3, "dilation_rate": 2, "strides": 2, "padding": "same", "pad_values": 1.0},
    {"kernel_size": 2, "dilation_rate": 2, "strides": 2, "padding": "same", "pad_values": 0.0},
]


@pytest.mark.parametrize("shape", [(2, 7, 8, 3), (1, 6, 5, 3)], ids=["7x8", "6x5"])
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=str)
def test_depthwise_forward(case, shape, rng):
    x = random_input(shape, rng)
    layer = QuantDepthwiseConv2D(**case, use_bias=True, activation="tanh",
                                 input_quantizer="ste_sign", depthwise_quantizer="ste_sign")
    layer.build(shape)
    w = rng.normal(size=layer.kernel.shape).astype("float32")
    b = rng.normal(size=layer.bias.shape).astype("float32")
    layer.kernel.assign(w)
    layer.bias.assign(b)
    k, s = _tuple(case["kernel_size"], 2), _tuple(case.get("strides", 1), 2)
    d = _tuple(case.get("dilation_rate", 1), 2)
    xp = np_pad(np_sign(x), case["padding"], k, s, d, case["pad_values"])
    expected = np.tanh(np_depthwise(xp, np_sign(w), s, d) + b)
    assert_close(layer(x), expected)


SEPARABLE_CASES = [
    {"kernel_size": 3, "strides": 1, "padding": "same", "pad_values": 1.0, "depth_multiplier": 2},
    {"kernel_size": 3, "strides": 2, "padding": "same", "pad_values": 0.0},
    {"kernel_size": 2, "strides": 2, "padding": "same", "pad_values": 1.0},
    {"kernel_size": 2, "strides": 1, "padding": "valid", "depth_multiplier": 2},
    {"kernel_size": 3, "dilation_rate": 2, "padding": "same", "pad_values": 1.0},
]


@pytest.mark.parametrize("shape", [(2, 7, 8, 3), (1, 6, 5, 3)], ids=["7x8", "6x5"])
@pytest.mark.parametrize("case", SEPARABLE_CASES, ids=str)
def test_separable_forward(case, shape, rng):
    x = random_input(shape, rng)
    layer = QuantSeparableConv2D(5, **case, use_bias=True, activation="relu",
                                 input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                 pointwise_quantizer="ste_sign")
    layer.build(shape)
    dw = rng.normal(size=layer.depthwise_kernel.shape).astype("float32")
    pw = rng.normal(size=layer.pointwise_kernel.shape).astype("float32")
    b = rng.normal(size=(5,)).astype("float32")
    layer.depthwise_kernel.assign(dw)
    layer.pointwise_kernel.assign(pw)
    layer.bias.assign(b)
    k, s = _tuple(case["kernel_size"], 2), _tuple(case.get("strides", 1), 2)
    d = _tuple(case.get("dilation_rate", 1), 2)
    xp = np_pad(np_sign(x), case["padding"], k, s, d, case.get("pad_values", 0.0))
    depthwise = np_depthwise(xp, np_sign(dw), s, d)
    expected = np.maximum(depthwise @ np_sign(pw)[0, 0] + b, 0.0)
    assert_close(layer(x), expected)


@pytest.mark.parametrize(
    "quant_cls, keras_cls, args",
    [
        (QuantConv2D, keras.layers.Conv2D, {"filters": 4, "kernel_size": 3, "strides": 2,
                                                "padding": "same", "groups": 2}),
        (QuantConv1D, keras.layers.Conv1D, {"filters": 4, "kernel_size": 3, "padding": "causal",
                                                "dilation_rate": 2}),
        (QuantDepthwiseConv2D, keras.layers.DepthwiseConv2D, {"kernel_size": 3,
                                                                  "depth_multiplier": 2,
                                                                  "padding": "same"}),
        (QuantSeparableConv2D, keras.layers.SeparableConv2D, {"filters": 3, "kernel_size": 3,
                                                                  "strides": 2, "padding": "same"}),
    ],
)
def test_without_quantizers_matches_keras_layer(quant_cls, keras_cls, args, rng):
    """No quantizer: the layer is the Keras layer (same weights, same output)."""
    shape = (2, 9, 4) if quant_cls is QuantConv1D else (2, 7, 6, 4)
    x = rng.normal(size=shape).astype("float32")
    ref = keras_cls(**args, activation="relu", bias_initializer="random_normal")
    quant = quant_cls(**args, activation="relu")
    ref.build(shape)
    quant.build(shape)
    quant.set_weights(ref.get_weights())
    assert_close(quant(x), keras.ops.convert_to_numpy(ref(x)))


# ----------------------------------------------------------------------------- gradients
def test_conv_gradients_match_numpy(rng):
    """d sum(out) / d x and d sum(out) / d W of a 3x3 stride-2 SAME conv padded with +1."""
    x = random_input((2, 7, 6, 3), rng) * 1.5
    layer = QuantConv2D(4, 3, strides=2, padding="same", pad_values=1.0, use_bias=False,
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    layer.build(x.shape)
    w = (rng.normal(size=layer.kernel.shape) * 1.2).astype("float32")
    layer.kernel.assign(w)
    _, gx, (gw,) = value_and_grads(layer, x, [layer.kernel])

    pads = [tf_same_pads(7, 3, 2, 1), tf_same_pads(6, 3, 2, 1)]
    xp = np_pad(np_sign(x), "same", (3, 3), (2, 2), (1, 1), 1.0)
    wq = np_sign(w)
    grad_xp = np.zeros_like(xp)
    grad_wq = np.zeros_like(wq)
    for oidx, kidx, slab in _windows(xp, (3, 3), (2, 2), (1, 1)):
        pos = tuple(oidx[i] * 2 + kidx[i] for i in range(2))
        grad_xp[(slice(None),) + pos] += wq[kidx].sum(axis=-1)
        grad_wq[kidx] += slab.sum(axis=0)[:, None]
    grad_xq = grad_xp[:, pads[0][0]:pads[0][0] + 7, pads[1][0]:pads[1][0] + 6]
    expected_gx = grad_xq * (np.abs(x) <= 1.0)
    expected_gw = grad_wq * (np.abs(w) <= 1.0)
    assert (np.abs(x) > 1).any() and (np.abs(w) > 1).any()
    np.testing.assert_array_equal(gx[np.abs(x) > 1], 0.0)
    assert_close(gx, expected_gx)
    assert_close(gw, expected_gw)
    assert np.abs(gw).sum() > 0


def test_pointwise_conv_input_gradient_by_hand():
    """1x1 conv: d sum(out) / d x[c] = 1[|x| <= 1] * sum_f sign(W[c, f])."""
    x = np.array([[[[0.5, -2.0, 0.0]]]], dtype="float32")
    w = np.array([[[[0.3, -0.2], [-0.7, -0.1], [0.4, 1.5]]]], dtype="float32")  # (1,1,3,2)
    layer = QuantConv2D(2, 1, use_bias=False, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign")
    layer.build(x.shape)
    layer.kernel.assign(w)
    out, gx, (gw,) = value_and_grads(layer, x, [layer.kernel])
    # out = [1, -1, 1] @ [[1, -1], [-1, -1], [1, 1]] = [1 + 1 + 1, -1 + 1 + 1] = [3, 1]
    np.testing.assert_array_equal(out.ravel(), [3.0, 1.0])
    # channel 0: 1 - 1 = 0; channel 1: |x| = 2 > 1 so 0; channel 2: 1 + 1 = 2
    np.testing.assert_array_equal(gx.ravel(), [0.0, 0.0, 2.0])
    # dW[c, f] = sign(x[c]) * 1[|W| <= 1]: W[2, 1] = 1.5 is clipped
    np.testing.assert_array_equal(gw[0, 0], [[1, 1], [-1, -1], [1, 0]])


def test_depthwise_kernel_gradient_flows(rng):
    x = random_input((1, 5, 5, 2), rng)
    layer = QuantDepthwiseConv2D(3, depth_multiplier=2, padding="same", pad_values=1.0,
                                 input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                 depthwise_initializer=keras.initializers.RandomUniform(-0.9, 0.9))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    grad = tape.gradient(loss, layer.kernel).numpy()
    # Every kernel tap of channel c sees the sum of sign(x[..., c]) over its shifted window;
    # the centre tap sees the whole channel.
    np.testing.assert_array_equal(grad[1, 1, :, 0], np_sign(x)[0].sum(axis=(0, 1)))
    np.testing.assert_array_equal(grad[..., 0], grad[..., 1])


# ----------------------------------------------------------------------------- properties
def test_is_binary_and_quantizers():
    binary = QuantConv2D(2, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    assert binary.is_binary
    assert set(binary.quantizers) == {"input_quantizer", "kernel_quantizer"}
    assert not QuantConv2D(2, 3, kernel_quantizer="ste_sign").is_binary
    assert not QuantConv2D(2, 3, input_quantizer="ste_sign").is_binary
    sep = QuantSeparableConv2D(2, 3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign")
    assert not sep.is_binary
    assert set(sep.quantizers) == {"input_quantizer", "depthwise_quantizer"}
    dw = QuantDepthwiseConv2D(3, input_quantizer="ste_sign", depthwise_quantizer="approx_sign")
    assert dw.is_binary


def test_export_scope_routes_calls_to_the_export_function(rng):
    from kbnn.layers import export_scope

    layer = QuantConv2D(2, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    other = QuantConv2D(2, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    x = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    trained = np.asarray(layer(x))
    other_out = np.asarray(other(x))
    before = dict(vars(layer))
    with export_scope({layer: lambda inputs: inputs * 3.0}):
        assert_close(layer(x), x * 3.0)
        assert_close(other(x), other_out)  # a layer the scope does not name is unchanged
    assert_close(layer(x), trained)  # and the scope ends with the block
    assert vars(layer).keys() == before.keys()


def test_depthwise_quantizer_sees_one_output_channel_per_filter():
    layer = QuantDepthwiseConv2D(3, depth_multiplier=2, input_quantizer="ste_sign",
                                 depthwise_quantizer="ste_sign")
    layer.build((1, 5, 5, 3))
    assert layer.depthwise_quantizer.built
    assert tuple(layer.depthwise_quantizer._build_shapes_dict["input_shape"]) == (3, 3, 1, 6)


# ----------------------------------------------------------------------------- config
CONFIG_CASES = [
    (QuantConv1D, {"filters": 3, "kernel_size": 2, "strides": 2, "padding": "causal", "groups": 1,
                       "dilation_rate": 1, "data_format": "channels_last", "pad_values": 1.0}),
    (QuantConv2D, {"filters": 4, "kernel_size": (3, 2), "strides": 1, "padding": "same", "groups": 2,
                       "dilation_rate": 2, "pad_values": 1.0}),
    (QuantDepthwiseConv2D, {"kernel_size": 3, "strides": 2, "depth_multiplier": 3, "padding": "same",
                                "pad_values": 1.0}),
    (QuantSeparableConv2D, {"filters": 5, "kernel_size": 3, "depth_multiplier": 2, "padding": "same",
                                "pad_values": 1.0}),
]


def _keras_parent(cls):
    return next(k for k in cls.__mro__ if k.__module__.startswith("keras."))


def _constructor_args(cls) -> set[str]:
    """Every named constructor argument of cls and of its Keras parent."""
    names = set()
    for klass in (cls, _keras_parent(cls)):
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"}
    return names


@pytest.mark.parametrize("cls, kwargs", CONFIG_CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_get_config_covers_every_argument(cls, kwargs):
    names = ("input_quantizer", *cls.quantized_weight_attributes)
    quantizer_args = {n: "approx_sign" for n in names}
    layer = cls(**kwargs, **quantizer_args, activation="relu", use_bias=False,
                activity_regularizer="l2", bias_constraint="non_neg", name="custom")
    config = layer.get_config()
    args = _constructor_args(cls)
    assert {"kernel_size", "strides", "activity_regularizer", "input_quantizer",
            "pad_values"} <= args
    missing = args - set(config)
    assert not missing, f"{cls.__name__}.get_config() lacks {sorted(missing)}"
    rebuilt = cls.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.pad_values == 1.0 and rebuilt.name == "custom" and not rebuilt.use_bias
    assert rebuilt.padding == kwargs["padding"]
    for name in quantizer_args:
        assert type(getattr(rebuilt, name)).__name__ == "ApproxSign"
    for key, value in kwargs.items():
        if key in ("kernel_size", "strides", "dilation_rate"):
            value = _tuple(value, len(config["strides"]))
        assert config[key] == value, key


# ----------------------------------------------------------------------------- training
def test_binary_conv_net_fits_one_step(rng):
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=(16,))
    kw = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
          "kernel_constraint": kbnn.constraints.WeightClip(), "use_bias": False}
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        QuantConv2D(8, 3, kernel_quantizer="ste_sign", padding="same", use_bias=False,
                    kernel_constraint=kbnn.constraints.WeightClip()),
        keras.layers.BatchNormalization(),
        QuantConv2D(8, 3, padding="same", pad_values=1.0, strides=2, **kw),
        keras.layers.BatchNormalization(),
        QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                             depthwise_quantizer="ste_sign"),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        kbnn.layers.QuantDense(3, **kw),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, QUANT_LAYERS)]
    assert len(kernels) == 4
    before = [k.numpy().copy() for k in kernels]
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for b, k in zip(before, kernels):
        assert not np.array_equal(b, k.numpy())
    for k in kernels[:2] + kernels[3:]:  # the WeightClip-constrained kernels
        assert np.abs(k.numpy()).max() <= 1.0


QUANT_LAYERS = (QuantConv2D, QuantDepthwiseConv2D, kbnn.layers.QuantDense)


def test_mixed_precision_quantizers_follow_the_layer_policy(rng):
    """Under "mixed_float16" the quantizers compute in float16 too (the binary values and
    their small integer sums are exact), so the layer output is float16."""
    x = random_input((2, 6, 5, 4), rng)
    args = {"filters": 3, "kernel_size": 3, "padding": "same", "pad_values": 1.0, "use_bias": False,
                "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}
    mixed = QuantConv2D(**args, dtype="mixed_float16")
    mixed.build(x.shape)
    w = rng.normal(size=mixed.kernel.shape).astype("float32")
    mixed.kernel.assign(w)
    assert mixed.input_quantizer.compute_dtype == "float16"
    out = mixed(x)
    assert out.dtype == "float16"
    xp = np_pad(np_sign(x), "same", (3, 3), (1, 1), (1, 1), 1.0)
    assert_close(tf.cast(out, "float32"), np_conv(xp, np_sign(w), (1, 1), (1, 1)))
