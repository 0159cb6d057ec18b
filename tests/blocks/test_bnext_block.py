"""BNextBlock (BNext, arXiv 2211.12933; docs/methods.md, section 'BNext'): structure against a
numpy reference, the ablation switches, argument checks; a two-block digits model that trains
with `model.fit` and the tau schedule, survives `.keras` bit for bit, converts strictly to one
`LceBconv2d` per binary conv and agrees with Keras; a two-block 32x32 model annealed to
tau < 1e-7 (float SE branches as float ops, and the 8-bit variant of the official
`bnext_quant.py` with int8 SE convs); and `kbnn.profile` against hand counts
(docs/methods.md, 'Counting costs': SE convs are FLOPs).

Every count is computed here from the design or read from the flatbuffer with TensorFlow's
schema, never from the block's or the converter's own bookkeeping.
"""

from __future__ import annotations

import warnings
from collections import Counter

import keras
import numpy as np
import pytest
from blocks_helpers import (
    BATCH_SIZE,
    STEM_FLOPS,
    binary_convs,
    classifier_flops,
    conv_macs,
    flatbuffer_graph,
    flatbuffer_ops,
    random_inputs,
    two_block_model,
)
from bnext_reference import block as np_block
from bnext_reference import randomize

import kbnn
from kbnn._keras_compat import flatten_layers
from kbnn.blocks import BNextBlock
from kbnn.converters import ConversionError, convert, verify
from kbnn.data import load_digits_split
from kbnn.layers import BNextFFN, ELMAttention, InfoRecoupling, QuantConv2D, QuantDense
from kbnn.quantizers import BNextWeight, FakeQuant
from kbnn.training.bnext import bnext_tau_schedule

# ------------------------------------------------------------------ structure and reference

REFERENCE_CASES = [
    # (kwargs, input shape, tau)
    ({"out_channels": 16, "mode": "scale"}, (5, 5, 16), 1e-8),
    ({"out_channels": 32, "strides": 2, "mode": "bias"}, (6, 6, 16), 1e-8),
    ({"out_channels": 32, "strides": 2, "mode": "scale", "pad_values": 1.0}, (5, 5, 16), 0.2),
    ({"out_channels": 16, "mode": "scale", "elm_attention": False}, (4, 4, 16), 1e-8),
    ({"out_channels": 16, "mode": "scale", "info_recoupling": False}, (4, 4, 16), 1.0),
    ({"out_channels": 32, "mode": "bias", "info_recoupling": False}, (4, 4, 16), 1e-8),
]


@pytest.mark.parametrize("kwargs, shape, tau", REFERENCE_CASES,
                         ids=[str(i) for i in range(len(REFERENCE_CASES))])
def test_forward_matches_numpy_reference(kwargs, shape, tau, rng):
    block = BNextBlock(**kwargs)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, block(inputs))
    randomize(model, tau=tau)
    for conv in block.binary_layers:  # latent kernels that are not tiny
        conv.kernel.assign(rng.normal(0, 0.3, tuple(conv.kernel.shape)).astype("float32"))
    x = rng.normal(size=(2, *shape)).astype("float32")
    got = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, np_block(block, x.astype(np.float64)), rtol=2e-4, atol=2e-5)
    strides = kwargs.get("strides", 1)
    assert got.shape == (2, -(-shape[0] // strides), -(-shape[1] // strides),
                         kwargs["out_channels"])


@pytest.mark.parametrize("mode, elm_attention, unit", [
    ("scale", True, ELMAttention), ("bias", True, BNextFFN), ("scale", False, BNextFFN),
    ("bias", False, BNextFFN)])
def test_mode_and_elm_attention_choose_the_3x3_unit(mode, elm_attention, unit):
    block = BNextBlock(32, strides=2, mode=mode, elm_attention=elm_attention)
    block.build((None, 8, 8, 16))
    assert type(block.unit3x3) is unit and block.unit3x3.strides == 2
    assert block.unit3x3.binary_conv.kernel_size == (3, 3)
    assert [u.binary_conv.kernel_size for u in block.units1x1] == [(1, 1), (1, 1)]
    assert [u.strides for u in block.units1x1] == [1, 1]


def test_binary_layers_and_batch_norm_pairs_of_both_widths():
    same = BNextBlock(16)
    same.build((None, 8, 8, 16))
    double = BNextBlock(32, strides=2, info_recoupling=False)
    double.build((None, 8, 8, 16))
    assert same.binary_layers == [same.unit3x3.binary_conv, same.units1x1[0].binary_conv]
    assert len(double.binary_layers) == 3 and double.doubles_channels
    assert not same.doubles_channels
    for block in (same, double):
        assert block.batch_norm_pairs() == [(u.binary_conv, u.norm1) for u in block.units]
        for conv in block.binary_layers:  # every binary conv is C_in -> C_in, no bias
            assert (conv.filters, conv.use_bias) == (16, False)
            assert type(conv.kernel_quantizer) is BNextWeight
    assert all(u.recoupling is None for u in double.units)
    floating = BNextBlock(16, input_quantizer=None, kernel_quantizer=None)
    floating.build((None, 4, 4, 16))
    assert floating.binary_layers == [] and floating.batch_norm_pairs() == []


@pytest.mark.parametrize("out_channels", [8, 24, 64])
def test_out_channels_other_than_c_or_2c_is_refused_at_build(out_channels):
    with pytest.raises(ValueError, match=r"`out_channels` of BNextBlock.*\(16\).*\(32\)"):
        BNextBlock(out_channels)(keras.Input((8, 8, 16)))


@pytest.mark.parametrize("kwargs, argument", [
    ({"mode": "attention"}, "mode"), ({"strides": 3}, "strides"),
    ({"elm_attention": "yes"}, "elm_attention"), ({"pad_values": 2.0}, "pad_values"),
    ({"se_ratio": 0}, "se_ratio"), ({"se_bits": 1}, "se_bits"),
    ({"kernel_clip": 0.0}, "kernel_clip"), ({"kernel_quantizer": "bnext"}, "kernel_quantizer"),
    ({"out_channels": 0}, "out_channels"),
])
def test_bad_arguments_are_keras_style_errors(kwargs, argument):
    with pytest.raises(ValueError, match=rf"`{argument}` of BNextBlock.*Received {argument}="):
        BNextBlock(**{"out_channels": 16, **kwargs})


# --------------------------------------------------------------------- digits, two blocks

EPOCHS = 4
# tau during epochs 0..3: 1, 1e-3, 1e-6, 1e-9: the last epoch trains with sign(W), so the BN
# moving statistics settle on binary weights.
TAU_DECAY = 1e-3
DIGITS_BLOCKS = (("down", {"out_channels": 64, "strides": 2, "mode": "bias"}),
                 ("attention", {"out_channels": 64, "mode": "scale"}))
# 8x8x32 -> [FFN 3x3 s2 (32) + two FFN 1x1 (32), concatenated] -> 4x4x64
#        -> [ELM-Attention 3x3 (64) + FFN 1x1 (64)] -> 4x4x64; one SE (two 1x1 convs) per unit.
DIGITS_BINARY_CONVS = 5
DIGITS_SE_CONVS = 2 * 5


def se_flops(channels: int, units: int, ratio: int = 8) -> int:
    """The SE's two real 1x1 convs on the pooled 1x1 map, C*C/8 + C/8*C MACs."""
    return units * (channels * (channels // ratio) + (channels // ratio) * channels)


DIGITS_BOPS = (conv_macs(3, 32, 32, 4, 4) + 2 * conv_macs(1, 32, 32, 4, 4)
               + conv_macs(3, 64, 64, 4, 4) + conv_macs(1, 64, 64, 4, 4))
DIGITS_FLOPS = STEM_FLOPS + se_flops(32, 3) + se_flops(64, 2) + classifier_flops(64)


@pytest.fixture(scope="module")
def digits():
    """The two-block model fitted with Adam (lr 1e-2 decaying linearly to 0, batch 64) and
    BNext's tau schedule; returns (model, history, accuracy)."""
    keras.utils.set_random_seed(0)
    model = two_block_model(*(BNextBlock(name=name, **kwargs) for name, kwargs in DIGITS_BLOCKS))
    data = load_digits_split()
    steps = EPOCHS * -(-len(data.x_train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-2, steps, 0.0)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=EPOCHS,
                        verbose=0, callbacks=[bnext_tau_schedule(decay=TAU_DECAY)])
    predictions = np.argmax(model.predict(data.x_test, verbose=0), axis=-1)
    return model, history.history, float(np.mean(predictions == data.y_test))


@pytest.fixture(scope="module")
def digits_flatbuffer(digits) -> bytes:
    return convert(digits[0], strict=True)


def test_two_block_model_trains_on_digits(digits):
    model, history, accuracy = digits
    losses = history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert accuracy > 0.8, accuracy  # chance is 0.1; 0.89 measured
    np.testing.assert_allclose(history["bnext_tau"], [1.0, 1e-3, 1e-6, 1e-9], rtol=1e-5)
    taus = [conv.kernel_quantizer.tau for conv in binary_convs(model)]
    assert len(taus) == DIGITS_BINARY_CONVS
    assert all(float(tau) < 1e-7 for tau in taus)
    for conv in binary_convs(model):  # the latent weights stayed within the official clamp
        assert np.max(np.abs(np.asarray(conv.kernel))) <= 1.5
    scales = [np.asarray(layer.scale) for layer in flatten_layers(model)
              if isinstance(layer, InfoRecoupling)]
    assert len(scales) == 5 and all(np.all((s >= 0) & (s <= 1)) for s in scales)


def test_keras_round_trip_gives_identical_outputs(digits, tmp_path):
    model = digits[0]
    path = str(tmp_path / "bnext.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    for name, kwargs in DIGITS_BLOCKS:
        config = loaded.get_layer(name).get_config()
        assert type(loaded.get_layer(name)) is BNextBlock
        assert config == model.get_layer(name).get_config()
        assert {key: config[key] for key in kwargs} == kwargs
    for before, after in zip(binary_convs(model), binary_convs(loaded)):
        assert float(after.kernel_quantizer.tau) == float(before.kernel_quantizer.tau)


def _tensor_types(flatbuffer: bytes) -> list[tuple[str, list[str], list[str], tuple]]:
    """(op name, input tensor types, output tensor types, first input's shape) of every op of
    subgraph 0, read with TensorFlow's flatbuffer schema."""
    from tensorflow.lite.python import schema_py_generated as schema

    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    names, graph = flatbuffer_graph(flatbuffer)
    return [(names[op.opcodeIndex],
             [types[graph.tensors[i].type] for i in op.inputs if i >= 0],
             [types[graph.tensors[i].type] for i in op.outputs],
             tuple(int(d) for d in graph.tensors[op.inputs[0]].shape))
            for op in graph.operators]


def _se_convs(flatbuffer: bytes) -> list[tuple[str, list[str], list[str], tuple]]:
    """The CONV_2D ops on a 1x1 map (the SE convs) with their tensor types."""
    return [typed for typed in _tensor_types(flatbuffer)
            if typed[0] == "CONV_2D" and typed[3][1:3] == (1, 1)]


def test_strict_conversion_gives_one_bconv_per_binary_conv(digits, digits_flatbuffer):
    model = digits[0]
    convs = binary_convs(model)
    assert len(convs) == DIGITS_BINARY_CONVS
    ops = flatbuffer_ops(digits_flatbuffer)
    bconv_widths = [shapes[1][0] for name, shapes in ops if name == "LceBconv2d"]
    assert sorted(bconv_widths) == sorted(conv.filters for conv in convs)
    counts = Counter(name for name, _ in ops)
    assert counts["CONV_2D"] == 1 + DIGITS_SE_CONVS  # the stem and the SE convs, float
    assert counts["LOGISTIC"] == 5  # one sigmoid gate per unit
    se = _se_convs(digits_flatbuffer)
    assert len(se) == DIGITS_SE_CONVS
    assert all(ins[0] == "FLOAT32" and outs == ["FLOAT32"] for _, ins, outs, _ in se)


def test_verify_agrees_with_keras(digits, digits_flatbuffer):
    result = verify(digits[0], digits_flatbuffer, random_inputs(200))
    assert result.top1_agreement >= 0.99
    assert result.max_abs_diff < 1e-3


def test_profile_counts_bops_and_flops_by_hand(digits):
    counts = kbnn.profile(digits[0])
    assert (counts.bops, counts.flops) == (DIGITS_BOPS, DIGITS_FLOPS) == (835_584, 21_888)


# ------------------------------------------------------------------- 32x32, float and 8-bit

STEM_32 = 32
CLASSES = 10


def _weight_fake_quant():
    return FakeQuant(mode="minmax", symmetric=True, narrow_range=True)


def model_32(se_bits: int | None) -> keras.Model:
    """Input(32, 32, 3) -> 3x3 s2 stem (32) + BN -> BNextBlock(64, s2, "bias")
    -> BNextBlock(64, "scale") -> PReLU -> GAP -> Dense(10). With se_bits=8, the official
    8-bit variant: 8-bit fake-quantized stem, SE convs and classifier."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    if se_bits:
        x = QuantConv2D(STEM_32, 3, strides=2, padding="same", use_bias=False,
                        input_quantizer=FakeQuant(init_min=-4.0, init_max=4.0),
                        kernel_quantizer=_weight_fake_quant(), name="stem")(inputs)
        x = FakeQuant(name="stem_quant")(x)
    else:
        x = keras.layers.Conv2D(STEM_32, 3, strides=2, padding="same", use_bias=False,
                                name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = BNextBlock(64, strides=2, mode="bias", se_bits=se_bits, name="block1")(x)
    x = BNextBlock(64, mode="scale", se_bits=se_bits, name="block2")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="head_prelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if se_bits:
        x = QuantDense(CLASSES, input_quantizer=FakeQuant(), kernel_quantizer=_weight_fake_quant(),
                       name="classifier")(x)
        x = FakeQuant(name="classifier_quant")(x)
    else:
        x = keras.layers.Dense(CLASSES, name="classifier")(x)
    return keras.Model(inputs, x)


def _inputs_32(n: int, seed: int = 0) -> np.ndarray:
    """Noise images with a per-image contrast and colour offset (so that the model's outputs,
    which average the feature maps, differ between images)."""
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-1, 1, (n, 32, 32, 3)) * rng.uniform(0.2, 2.0, (n, 1, 1, 3))
         + rng.uniform(-1.5, 1.5, (n, 1, 1, 3)))
    return x.astype("float32")


def _distinct_top1(model, x) -> int:
    return len(set(np.argmax(np.asarray(model(x)), axis=-1).tolist()))


def _fit_briefly(model: keras.Model) -> None:
    """A few steps, so the BN statistics and the FakeQuant ranges move off their init."""
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.random.default_rng(1).integers(0, CLASSES, 64)
    model.fit(_inputs_32(64), labels, batch_size=16, epochs=1, verbose=0)


def _anneal(model: keras.Model, epoch: int = 153) -> None:
    """tau as the default schedule (0.9**epoch) sets it at `epoch`, in every BNextWeight."""
    callback = bnext_tau_schedule()
    for variable in callback.targets(model)["tau"]:
        variable.assign(callback.value("tau", epoch))


# 32x32x3 -> stem s2 -> 16x16x32 -> block1 (s2) -> 8x8x64 -> block2 -> 8x8x64
BOPS_32 = (conv_macs(3, 32, 32, 8, 8) + 2 * conv_macs(1, 32, 32, 8, 8)
           + conv_macs(3, 64, 64, 8, 8) + conv_macs(1, 64, 64, 8, 8))
FLOPS_32 = conv_macs(3, 3, STEM_32, 16, 16) + se_flops(32, 3) + se_flops(64, 2) + 64 * CLASSES


@pytest.fixture(scope="module")
def float_32() -> keras.Model:
    model = model_32(None)
    _fit_briefly(model)
    return model


def test_32x32_before_annealing_strict_refuses_naming_layer_and_tau(float_32):
    _anneal(float_32, epoch=152)  # tau = 1.109e-7: the last epoch that is not binary
    with pytest.raises(ConversionError) as info:
        convert(float_32, strict=True)
    assert info.value.layer in {conv.name for conv in binary_convs(float_32)}
    assert "tau = 1.10882e-07" in str(info.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flatbuffer = convert(float_32, strict=False)
    kept = [str(w.message) for w in caught if "kept as float ops" in str(w.message)]
    assert len(kept) == 5 and all("tau = 1.10882e-07" in m for m in kept)
    assert {m.split(": ")[1] for m in kept} == {conv.name for conv in binary_convs(float_32)}
    # kbnn exports these layers as their own float graph; LCE may still lower one whose
    # clamped filter clamp(W / tau, -1, 1) is already +-1 everywhere (its 0.5% tolerance)
    result = verify(float_32, flatbuffer, _inputs_32(8, seed=2))
    assert result.top1_agreement == 1.0 and result.max_rel_diff < 1e-4


def test_32x32_annealed_converts_binary_convs_to_bconvs_and_keeps_se_float(float_32):
    _anneal(float_32)  # epoch 153: tau = 9.98e-8 < 1e-7
    flatbuffer = convert(float_32, strict=True)
    convs = binary_convs(float_32)
    assert len(convs) == 5
    ops = flatbuffer_ops(flatbuffer)
    counts = Counter(name for name, _ in ops)
    assert counts["LceBconv2d"] == len(convs) and counts["CONV_2D"] == 1 + 10
    se = _se_convs(flatbuffer)
    assert len(se) == 10
    assert all(ins == ["FLOAT32"] * 3 and outs == ["FLOAT32"] for _, ins, outs, _ in se)
    x = _inputs_32(32, seed=2)
    assert _distinct_top1(float_32, x) > 1  # the agreement below is not vacuous
    result = verify(float_32, flatbuffer, x)
    assert result.top1_agreement >= 0.99 and result.max_rel_diff < 1e-4
    assert (kbnn.profile(float_32).bops, kbnn.profile(float_32).flops) == (BOPS_32, FLOPS_32)


def test_32x32_8_bit_variant_converts_to_int8_ops_around_the_bconvs():
    model = model_32(8)
    _fit_briefly(model)
    _anneal(model)
    flatbuffer = convert(model, int8=True, strict=True)
    typed = _tensor_types(flatbuffer)
    counts = Counter(name for name, _, _, _ in typed)
    assert counts["LceBconv2d"] == len(binary_convs(model)) == 5
    se = _se_convs(flatbuffer)
    assert len(se) == 10  # every SE conv is int8: input, weights and output
    assert all(ins[:2] == ["INT8", "INT8"] and outs == ["INT8"] for _, ins, outs, _ in se)
    assert all(ins == ["INT8"] and outs == ["INT8"] for name, ins, outs, _ in typed
               if name == "LOGISTIC")
    stem = [t for t in typed if t[0] == "CONV_2D" and t[3][1:3] == (32, 32)]
    assert len(stem) == 1 and stem[0][1][:2] == ["INT8", "INT8"] and stem[0][2] == ["INT8"]
    assert [t[1][:2] for t in typed if t[0] == "FULLY_CONNECTED"] == [["INT8", "INT8"]]
    # the binary convs stay bitpacked binary ops (packed int32 input) with float output
    assert all(ins[0] == "INT32" and outs == ["FLOAT32"] for name, ins, outs, _ in typed
               if name == "LceBconv2d")
    # int8 agrees with the fake-quantized Keras model within a few quantization steps (the
    # classifier's output grid has steps of about 0.05)
    x = _inputs_32(32, seed=2)
    assert _distinct_top1(model, x) > 1
    result = verify(model, flatbuffer, x, atol=0.15, rtol=0.05)
    assert result.within_tolerance >= 0.95 and result.top1_agreement >= 0.9, result.table()
    counts = kbnn.profile(model)
    assert (counts.bops, counts.flops) == (BOPS_32, FLOPS_32)


# ----------------------------------------------------------------------- BNext-T at 224x224

TINY_CHANNELS = [32, 64] + [128] * 2 + [256] * 2 + [512] * 6 + [1024] * 2


def _tiny_plan():
    """(C_in, C_out, strides, mode) of each BNext-T block: stride 2 wherever the width changes
    except into the first block's width; mode "bias" for block 1, then "scale" for even i."""
    plan = []
    for i in range(1, len(TINY_CHANNELS)):
        c_in, c_out = TINY_CHANNELS[i - 1], TINY_CHANNELS[i]
        strides = 2 if c_in != c_out and c_out != TINY_CHANNELS[1] else 1
        mode = "bias" if i == 1 else ("scale" if i % 2 == 0 else "bias")
        plan.append((c_in, c_out, strides, mode))
    return plan


def test_profile_of_bnext_tiny_matches_a_hand_count():
    """BNext-T (official channel list) at 224x224: BOPs of every binary conv and FLOPs of the
    stem, the SE convs and the classifier, counted here block by block."""
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    for _, c_out, strides, mode in _tiny_plan():
        x = BNextBlock(c_out, strides=strides, mode=mode)(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1000)(x))

    size, bops, binary_params = 112, 0, 0
    flops = conv_macs(3, 3, 32, 112, 112) + 1024 * 1000  # stem and classifier
    for c_in, c_out, strides, _ in _tiny_plan():
        size //= strides
        n_1x1 = 1 if c_out == c_in else 2
        bops += conv_macs(3, c_in, c_in, size, size) + n_1x1 * conv_macs(1, c_in, c_in, size, size)
        binary_params += 9 * c_in * c_in + n_1x1 * c_in * c_in
        flops += se_flops(c_in, 1 + n_1x1)
    counts = kbnn.profile(model)
    assert (counts.bops, counts.flops, counts.binary_params) == (bops, flops, binary_params)
    # the exact count of the official architecture (docs/methods.md, 'Counting costs')
    assert (bops, flops) == (4_816_896_000, 13_344_512)
    assert counts.ops == pytest.approx(0.886e8, rel=1e-3)
