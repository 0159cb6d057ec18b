"""BNext's units (arXiv 2211.12933; docs/methods.md, section 'BNext'): SqueezeExpand,
InfoRecoupling, ELMAttention and BNextFFN, each against a numpy reference (forward, and
gradients by central finite differences of the reference with the straight-through "detach"
trick written out, see tests/bnext_reference.py), plus structure, constraints, configs and
argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from bnext_reference import (
    central_difference,
    f64,
    info_recoupling,
    randomize,
    squeeze_expand,
    unit,
)
from reference_values import value_and_grads

import kbnn
from kbnn.constraints import WeightClip
from kbnn.layers import (
    BNextFFN,
    ELMAttention,
    InfoRecoupling,
    QuantConv2D,
    RangeClip,
    SqueezeExpand,
)
from kbnn.quantizers import BNextWeight, FakeQuant, HardSign

RTOL, ATOL = 2e-4, 2e-5
GRAD_RTOL, GRAD_ATOL = 2e-3, 2e-4


def _tape(fn, x, variables=(), upstream=None):
    """fn(x) and the gradients of sum(upstream * fn(x)) w.r.t. x and `variables` (float32), as
    one list [dx, d variable, ...]."""
    y, dx, grads = value_and_grads(fn, x, variables, upstream)
    return y, [dx, *grads]


# -------------------------------------------------------------------------- SqueezeExpand


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_squeeze_expand_forward_and_gradients(gate, rng):
    se = SqueezeExpand(gate=gate)
    x = rng.normal(size=(2, 3, 3, 16)).astype("float32")
    se.build(x.shape)
    randomize(se)
    assert (se.hidden, se.conv1.filters, se.conv2.filters) == (2, 2, 16)  # C // 8
    upstream = rng.normal(size=(2, 1, 1, 16)).astype("float32")
    y, (dx, dk1) = _tape(se, x, [se.conv1.kernel], upstream)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, squeeze_expand(se, x64), rtol=RTOL, atol=ATOL)

    def loss_x(v):
        return float(np.sum(squeeze_expand(se, v) * upstream))

    np.testing.assert_allclose(dx, central_difference(loss_x, x64), rtol=GRAD_RTOL,
                               atol=GRAD_ATOL)
    k1 = f64(se.conv1.kernel)

    def loss_k1(k):
        return float(np.sum(squeeze_expand(_Float64SE(se, k), x64) * upstream))

    np.testing.assert_allclose(dk1, central_difference(loss_k1, k1), rtol=GRAD_RTOL,
                               atol=GRAD_ATOL)


class _Float64SE:
    """`se` with conv1's kernel replaced by a float64 array (finite differences)."""

    def __init__(self, se, k1):
        self.gate = se.gate
        self.conv2 = se.conv2
        self.conv1 = type("Conv", (), {"kernel": k1, "bias": se.conv1.bias})


def test_squeeze_expand_output_width_and_hidden_width():
    se = SqueezeExpand(filters=24, ratio=4)
    assert se.compute_output_shape((None, 5, 5, 16)) == (None, 1, 1, 24)
    y = se(np.zeros((1, 5, 5, 16), "float32"))
    assert y.shape == (1, 1, 1, 24) and se.hidden == 4
    small = SqueezeExpand()  # C < ratio: a hidden width of 1 (the official code fails there)
    small(keras.Input((3, 3, 4)))
    assert small.hidden == 1
    for kwargs, argument in (({"ratio": 0}, "ratio"), ({"gate": "relu"}, "gate"),
                             ({"bits": 1}, "bits"), ({"filters": 0}, "filters")):
        with pytest.raises(ValueError, match=rf"`{argument}` of SqueezeExpand"):
            SqueezeExpand(**kwargs)


def test_squeeze_expand_8_bit_variant_structure_and_costs():
    inputs = keras.Input((4, 4, 16))
    se = SqueezeExpand(bits=8, name="se")
    model = keras.Model(inputs, se(inputs))
    for conv in (se.conv1, se.conv2):
        assert isinstance(conv, QuantConv2D) and conv.use_bias and not conv.is_binary
        assert isinstance(conv.input_quantizer, FakeQuant) and conv.input_quantizer.num_bits == 8
        kernel = conv.kernel_quantizer
        assert isinstance(kernel, FakeQuant)
        assert (kernel.mode, kernel.symmetric, kernel.narrow_range) == ("minmax", True, True)
    assert isinstance(se.output_quant, FakeQuant)
    gate_quant = se.gate_quant  # an int8 LOGISTIC's fixed output grid: steps of 1/256 in [0, 1)
    assert (float(gate_quant.min_var), float(gate_quant.max_var)) == (0.0, 255 / 256)
    assert gate_quant.trainable_weights == []
    counts = kbnn.profile(model)
    assert (counts.bops, counts.flops) == (0, 16 * 2 + 2 * 16)  # two 1x1 convs on 1x1, by hand
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 4, 16)).astype("float32")
    gate = np.asarray(model(x))
    assert gate.shape == (2, 1, 1, 16) and np.all((gate > 0) & (gate < 1))


# ------------------------------------------------------------------------- InfoRecoupling


def test_info_recoupling_forward_and_gradients(rng):
    layer = InfoRecoupling()
    x_in = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    x = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    layer.build([x_in.shape, x.shape])
    np.testing.assert_array_equal(layer.scale.numpy(), np.full(8, 0.5))  # init 0.5
    randomize(layer)
    upstream = rng.normal(size=x.shape).astype("float32")

    def fn(v):
        return layer([v, tf.constant(x)])

    y, (dx_in, ds) = _tape(fn, x_in, [layer.scale], upstream)
    a, b = x_in.astype(np.float64), x.astype(np.float64)
    np.testing.assert_allclose(y, info_recoupling(layer, a, b), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        dx_in, central_difference(lambda v: float(np.sum(info_recoupling(layer, v, b) * upstream)),
                                  a), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    _, (dx,) = _tape(lambda v: layer([tf.constant(x_in), v]), x, (), upstream)
    np.testing.assert_allclose(
        dx, central_difference(lambda v: float(np.sum(info_recoupling(layer, a, v) * upstream)),
                               b), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    s0 = f64(layer.scale)

    def loss_s(s):
        layer.scale.assign(s.astype("float32"))
        try:
            return float(np.sum(info_recoupling(layer, a, b) * upstream))
        finally:
            layer.scale.assign(s0.astype("float32"))

    # float32 s in the reference: a larger step keeps the rounding of s out of the difference
    np.testing.assert_allclose(ds, central_difference(loss_s, s0, eps=1e-3), rtol=5e-3, atol=1e-3)


def test_info_recoupling_scale_is_clipped_to_the_unit_interval_after_each_update():
    layer = InfoRecoupling()
    layer.build([(None, 2, 2, 8), (None, 2, 2, 8)])
    assert isinstance(layer.scale.constraint, RangeClip)
    optimizer = keras.optimizers.SGD(10.0)
    optimizer.apply_gradients([(tf.constant([1.0, -1.0] * 4), layer.scale)])
    np.testing.assert_array_equal(layer.scale.numpy(), [0.0, 1.0] * 4)  # 0.5 -+ 10, clipped


def test_info_recoupling_needs_two_inputs_of_the_same_width():
    with pytest.raises(ValueError, match="list \\[x_in, x\\]"):
        InfoRecoupling().build((None, 2, 2, 8))
    with pytest.raises(ValueError, match="same channels"):
        InfoRecoupling().build([(None, 2, 2, 16), (None, 2, 2, 8)])
    with pytest.raises(ValueError, match=r"min_value <= max_value.*min_value=1"):
        RangeClip(1.0, 0.0)


# ------------------------------------------------------------------------------- the units

UNIT_CASES = [
    # (class, kwargs, input shape, tau)
    (ELMAttention, {}, (5, 5, 16), 1.0),
    (ELMAttention, {"strides": 2}, (6, 6, 16), 1e-8),
    (ELMAttention, {"strides": 2, "pad_values": 1.0}, (5, 5, 16), 0.05),
    (ELMAttention, {"info_recoupling": False}, (4, 4, 8), 1e-8),
    (BNextFFN, {"kernel_size": 3}, (5, 5, 16), 0.5),
    (BNextFFN, {"kernel_size": 3, "strides": 2}, (6, 6, 8), 1e-8),
    (BNextFFN, {"kernel_size": 1}, (4, 4, 16), 1e-8),
    (BNextFFN, {"kernel_size": 1, "info_recoupling": False}, (4, 4, 8), 1.0),
    (BNextFFN, {"kernel_size": 3, "se_gate": "hard_sigmoid", "info_recoupling": True},
     (4, 4, 8), 1e-8),
]
UNIT_IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}-tau{tau:g}"
            for cls, kw, _, tau in UNIT_CASES]


def _unit(cls, kwargs, shape, tau):
    layer = cls(**kwargs)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    randomize(layer, tau=tau)
    # a latent kernel that is not tiny, so that tau's soft clamp and sign(W) both show
    kernel = layer.binary_conv.kernel
    kernel.assign(np.random.default_rng(7).normal(0, 0.3, tuple(kernel.shape)).astype("float32"))
    return layer, model


@pytest.mark.parametrize("cls, kwargs, shape, tau", UNIT_CASES, ids=UNIT_IDS)
def test_unit_forward_matches_numpy(cls, kwargs, shape, tau, rng):
    layer, model = _unit(cls, kwargs, shape, tau)
    x = rng.normal(size=(2, *shape)).astype("float32")
    got = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, unit(layer, x.astype(np.float64)), rtol=RTOL, atol=ATOL)
    strides = kwargs.get("strides", 1)
    assert got.shape == (2, -(-shape[0] // strides), -(-shape[1] // strides), shape[2])


@pytest.mark.parametrize("cls, kwargs, shape, tau", [UNIT_CASES[i] for i in (1, 2, 4, 7)],
                         ids=[UNIT_IDS[i] for i in (1, 2, 4, 7)])
def test_unit_gradients_match_the_straight_through_reference(cls, kwargs, shape, tau, rng):
    """d/dx and d/dW of sum(upstream * unit(x)): through HardSign (1[|u| <= 1.5]), the BNext
    weights (identity), BN, PReLU, the SE gate, the mix and the residual."""
    layer, _ = _unit(cls, kwargs, shape, tau)
    x = rng.normal(size=(1, *shape)).astype("float32")
    kernel = layer.binary_conv.kernel
    upstream = rng.normal(size=layer.compute_output_shape((1, *shape))).astype("float32")
    _, (dx, dw) = _tape(lambda v: layer(v, training=False), x, [kernel], upstream)
    x0, w0 = x.astype(np.float64), f64(kernel)

    def loss_x(v):
        return float(np.sum(unit(layer, v, sign_at=x0) * upstream))

    def loss_w(w):
        return float(np.sum(unit(layer, x0, w=w, weight_at=w0) * upstream))

    np.testing.assert_allclose(dx, central_difference(loss_x, x0), rtol=GRAD_RTOL,
                               atol=GRAD_ATOL)
    picked = np.random.default_rng(1).choice(w0.size, size=min(w0.size, 96), replace=False)
    numeric = central_difference(loss_w, w0, indices=picked).ravel()[picked]
    np.testing.assert_allclose(dw.ravel()[picked], numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_unit_structure_and_defaults():
    attention = ELMAttention(strides=2)
    attention.build((None, 8, 8, 16))
    conv = attention.binary_conv
    assert (conv.filters, conv.kernel_size, conv.strides, conv.use_bias) == (16, (3, 3),
                                                                            (2, 2), False)
    assert (conv.padding, conv.pad_values) == ("same", 0.0)
    assert type(conv.input_quantizer) is HardSign and conv.input_quantizer.clip_range == 1.5
    assert type(conv.kernel_quantizer) is BNextWeight
    assert isinstance(conv.kernel_constraint, WeightClip)
    assert conv.kernel_constraint.clip_value == 1.5
    init = conv.kernel_initializer
    assert isinstance(init, keras.initializers.RandomNormal) and init.stddev == 1e-3
    assert attention.activation1 is not None and attention.norm2 is not None
    assert attention.pooling is not None and attention.recoupling is not None
    np.testing.assert_array_equal(attention.activation2.alpha.numpy().ravel(), np.full(16, 0.25))
    assert attention.batch_norm_pairs() == [(conv, attention.norm1)]
    assert attention.binary_layers == [conv]
    ffn = BNextFFN(1, info_recoupling=False)
    ffn.build((None, 4, 4, 8))
    assert ffn.activation1 is None and ffn.norm2 is None and ffn.recoupling is None
    assert ffn.binary_conv.kernel_size == (1, 1)
    floating = BNextFFN(3, input_quantizer=None, kernel_quantizer=None)
    floating.build((None, 4, 4, 8))
    assert floating.batch_norm_pairs() == [] and floating.binary_layers == []
    with pytest.raises(ValueError, match="not built"):
        BNextFFN().batch_norm_pairs()


def test_unit_kernel_is_clipped_to_1_5_after_each_update():
    layer = BNextFFN(1)
    layer.build((None, 2, 2, 8))
    kernel = layer.binary_conv.kernel
    keras.optimizers.SGD(100.0).apply_gradients([(tf.ones_like(kernel), kernel)])
    np.testing.assert_array_equal(kernel.numpy(), np.full(kernel.shape, -1.5))
    unclipped = BNextFFN(1, kernel_clip=None)
    unclipped.build((None, 2, 2, 8))
    assert unclipped.binary_conv.kernel_constraint is None


@pytest.mark.parametrize("cls, kwargs", [
    (ELMAttention, {"strides": 2, "pad_values": 1.0, "se_bits": 8, "se_ratio": 4}),
    (BNextFFN, {"kernel_size": 1, "info_recoupling": False, "kernel_clip": 1.0,
                "input_quantizer": {"class_name": "hard_sign", "config": {"clip_range": 1.0}},
                "kernel_quantizer": BNextWeight(tau=0.5)}),
])
def test_unit_config_and_keras_round_trip(cls, kwargs, tmp_path, rng):
    layer = cls(**kwargs, name="unit")
    inputs = keras.Input((6, 6, 16))
    model = keras.Model(inputs, layer(inputs))
    randomize(layer, tau=0.01)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = str(tmp_path / "unit.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = rng.normal(size=(2, 6, 6, 16)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert loaded.get_layer("unit").get_config() == layer.get_config()
    assert float(loaded.get_layer("unit").binary_conv.kernel_quantizer.tau) == pytest.approx(0.01)


@pytest.mark.parametrize("cls, kwargs, argument", [
    (BNextFFN, {"kernel_size": 2}, "kernel_size"),
    (BNextFFN, {"strides": 3}, "strides"),
    (ELMAttention, {"pad_values": 0.5}, "pad_values"),
    (ELMAttention, {"kernel_clip": -1.0}, "kernel_clip"),
    (ELMAttention, {"info_recoupling": 1}, "info_recoupling"),
    (ELMAttention, {"se_gate": "softmax"}, "se_gate"),
    (ELMAttention, {"input_quantizer": "hard_sgn"}, "input_quantizer"),
    (BNextFFN, {"input_quantizer": "bnext_weight"}, "input_quantizer"),
])
def test_unit_bad_arguments(cls, kwargs, argument):
    with pytest.raises(ValueError, match=rf"`{argument}`"):
        layer = cls(**kwargs)
        layer.build((None, 4, 4, 16))
