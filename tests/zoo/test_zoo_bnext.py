"""kbnn.zoo BNext-T/S/M/L (arXiv 2211.12933, official `hpi-xnor/BNext` `src/bnext.py`): the
official layout, the figures at 224x224 against the counts typed below, PyTorch's padding of the
strided binary convolutions, the options, and conversion.

Figures (Bi-Real Net convention, docs/methods.md "Counting costs": BOPs = binary MACs, FLOPs =
real MACs of the stem, the SE branches and the classifier, OPs = BOPs/64 + FLOPs), computed from
the official architecture: parameters (trainable, as PyTorch counts them; BN moving statistics
left out) within 0.5%, BOPs and FLOPs within 1%, OPs within 2% of the published OPs (the BNext
README's model sizes / BEANet's comparison table: T 0.89e8, S 1.90e8; M and L from the same
count)."""

from __future__ import annotations

import collections
import warnings

import keras
import numpy as np
import pytest
from blocks_helpers import binary_convs, flatbuffer_ops

import kbnn
from kbnn import zoo
from kbnn.blocks import BNextBlock
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import BNextWeight, FakeQuant

# name -> (params, BOPs, FLOPs, OPs, binary convs): the official stage_out_channel lists
# T 32,64,128x2,256x2,512x6,1024x2; S 48,96,192x2,384x2,768x6,1536x2;
# M 48,96,192x4,384x4,768x8,1536x4; L 64,128,256x4,512x4,1024x16,2048x4.
FIGURES = {
    "BNextTiny": (30.86e6, 4.817e9, 0.133e8, 0.886e8, 31),
    "BNextSmall": (68.59e6, 10.84e9, 0.211e8, 1.905e8, 31),
    "BNextMiddle": (134.5e6, 20.09e9, 0.243e8, 3.381e8, 47),
    "BNextLarge": (326.6e6, 52.15e9, 0.394e8, 8.543e8, 63),
}
PUBLISHED_OPS = {"BNextTiny": 0.89e8, "BNextSmall": 1.90e8}
NAMES = list(FIGURES)
CHANNELS = {"BNextTiny": [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024] * 2}


def _within(value, target, tolerance):
    return abs(value - target) <= tolerance * target


def set_tau(model, tau: float) -> int:
    """Set every BNextWeight temperature of `model`; returns how many."""
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        quantizer = getattr(layer, "kernel_quantizer", None)
        if isinstance(quantizer, BNextWeight):
            quantizer.tau.assign(tau)
            count += 1
    return count


def randomize_bnext(model, seed: int = 3) -> None:
    """Random, non-default values for the BN, PReLU, LearnableBias, recoupling-scale and SE
    parameters (BN variances positive, scales in [0, 1]); kernels keep their init, tau is left
    alone."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        leaf = variable.path.split("/")[-1]
        if leaf in ("kernel", "tau") or "float" not in str(variable.dtype):
            continue
        shape = tuple(variable.shape)
        if leaf in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "scale":
            value = rng.uniform(0.0, 1.0, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        variable.assign(value.astype("float32"))


def blocks(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, BNextBlock)]


# ---------------------------------------------------------------------------------- layout

def test_registered_in_list_models():
    assert zoo.list_models()[-4:] == NAMES
    assert zoo.get("bnext-tiny", width_multiplier=0.125, include_top=False).name == "bnext_tiny"


def test_official_layout_of_bnext_tiny():
    """Block i: width CHANNELS[i], stride 2 where the width changes except into block 1's
    width, mode "bias" for i = 1 and odd i, "scale" for even i; doubling blocks have two 1x1
    units."""
    model = zoo.BNextTiny(width_multiplier=0.125)
    channels = [c // 8 for c in CHANNELS["BNextTiny"]]
    found = blocks(model)
    assert [b.name for b in found] == [f"block{i}" for i in range(1, 14)]
    assert model.get_layer("stem_conv").filters == channels[0]
    for i, block in enumerate(found, start=1):
        assert block.out_channels == channels[i]
        strides = 2 if channels[i] != channels[i - 1] and i != 1 else 1
        assert block.strides == strides, block.name
        assert block.mode == ("bias" if i == 1 or i % 2 else "scale"), block.name
        assert len(block.units1x1) == (2 if channels[i] != channels[i - 1] else 1)
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["input", "stem_conv_pad", "stem_conv", "stem_bn"]
    assert names[-4:] == ["head_prelu", "avg_pool", "avg_pool_flatten", "predictions"]


def test_strided_binary_convs_pad_as_pytorch():
    model = zoo.BNextTiny(width_multiplier=0.125)
    for block in blocks(model):
        conv = block.unit3x3.binary_conv
        assert conv.symmetric_padding == (block.strides == 2), block.name
        assert all(not unit.binary_conv.symmetric_padding for unit in block.units1x1)
    assert model.get_layer("stem_conv_pad").padding == ((1, 0), (1, 0))  # the row PyTorch pads after is never read
    assert model.get_layer("stem_conv").padding == "valid"


def test_symmetric_padding_survives_a_keras_round_trip(tmp_path):
    model = zoo.BNextTiny(input_shape=(32, 32, 3), classes=5, width_multiplier=0.125)
    randomize_bnext(model)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "bnext.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("block2").unit3x3.binary_conv.symmetric_padding
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_ablation_switches():
    plain = zoo.BNextTiny(width_multiplier=0.125, elm_attention=False, info_recoupling=False)
    for block in blocks(plain):
        assert not block.uses_attention and not block.info_recoupling
        assert all(unit.recoupling is None for unit in block.units)
    default = zoo.BNextTiny(width_multiplier=0.125)
    assert any(block.uses_attention for block in blocks(default))
    with pytest.raises(ValueError, match="argument `elm_attention` of BNextTiny"):
        zoo.BNextTiny(elm_attention="yes")


def test_eight_bit_variant():
    model = zoo.BNextTiny(input_shape=(32, 32, 3), classes=5, width_multiplier=0.125, bits=8)
    stem, fc = model.get_layer("stem_conv"), model.get_layer("predictions")
    assert isinstance(stem, QuantConv2D) and isinstance(stem.input_quantizer, FakeQuant)
    assert isinstance(fc, QuantDense) and isinstance(fc.kernel_quantizer, FakeQuant)
    assert all(block.se_bits == 8 for block in blocks(model))
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 5)
    with pytest.raises(ValueError, match="argument `bits` of BNextTiny"):
        zoo.BNextTiny(bits=4)


def test_small_inputs_and_no_top():
    model = zoo.BNextSmall(input_shape=(8, 8, 1), classes=3, width_multiplier=0.125)
    assert model(np.ones((2, 8, 8, 1), "float32")).shape == (2, 3)
    features = zoo.BNextTiny(include_top=False, width_multiplier=0.125)
    assert features(np.zeros((1, 64, 48, 3), "float32")).shape == (1, 2, 2, 128)


# --------------------------------------------------------------------------------- figures

@pytest.mark.parametrize("name", NAMES[:2] + [pytest.param(n, marks=pytest.mark.slow)
                                               for n in NAMES[2:]])
def test_figures_at_224(name):
    params, bops, flops, ops, convs = FIGURES[name]
    model = zoo.get(name)
    profile = kbnn.profile(model)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert _within(trainable, params, 0.005), (trainable, params)
    assert _within(profile.bops, bops, 0.01), (profile.bops, bops)
    assert _within(profile.flops, flops, 0.01), (profile.flops, flops)
    assert _within(profile.ops, ops, 0.01), (profile.ops, ops)
    if name in PUBLISHED_OPS:
        assert _within(profile.ops, PUBLISHED_OPS[name], 0.02), (profile.ops, name)
    assert len(binary_convs(model)) == convs


# ------------------------------------------------------------------------------ conversion

@pytest.mark.slow
def test_bnext_tiny_converts_at_224_once_annealed():
    from kbnn.converters import convert

    model = zoo.BNextTiny()
    assert set_tau(model, 1e-8) == 31
    ops = collections.Counter(name for name, _ in flatbuffer_ops(convert(model, strict=True)))
    assert ops["LceBconv2d"] == len(binary_convs(model)) == 31
    assert ops["FULLY_CONNECTED"] == 1


def test_narrow_bnext_converts_and_matches_keras():
    from kbnn.converters import convert, verify

    model = zoo.BNextTiny(input_shape=(64, 64, 3), classes=10, width_multiplier=0.25,
                          classifier_activation=None)
    randomize_bnext(model)
    set_tau(model, 1e-8)
    flatbuffer = convert(model, strict=True)
    ops = collections.Counter(name for name, _ in flatbuffer_ops(flatbuffer))
    assert ops["LceBconv2d"] == len(binary_convs(model)) == 31
    x = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype("float32")
    report = verify(model, flatbuffer, x, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0, report
    assert report.top1_agreement == 1.0


def test_strict_conversion_refuses_unannealed_weights():
    from kbnn.converters import convert

    model = zoo.BNextTiny(input_shape=(32, 32, 3), classes=10, width_multiplier=0.125)
    with pytest.raises(Exception, match="tau"):
        convert(model, strict=True)


# ------------------------------------------------------------------------ 8-bit conversion

def _tensor_types(flatbuffer: bytes) -> list[tuple[str, list[str], list[str], tuple]]:
    """(op name, input tensor types, output tensor types, first input's shape) of every op of
    subgraph 0, read with TensorFlow's flatbuffer schema (as tests/blocks/test_bnext_block.py
    does for the block-level 8-bit model)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    names = [c.customCode.decode() if c.customCode
             else builtin[max(c.builtinCode, c.deprecatedBuiltinCode)]
             for c in model.operatorCodes]
    graph = model.subgraphs[0]
    return [(names[op.opcodeIndex],
             [types[graph.tensors[i].type] for i in op.inputs if i >= 0],
             [types[graph.tensors[i].type] for i in op.outputs],
             tuple(int(d) for d in graph.tensors[op.inputs[0]].shape))
            for op in graph.operators]


def _images_32(n: int, seed: int) -> np.ndarray:
    """Noise images with a per-image contrast and colour offset."""
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-1, 1, (n, 32, 32, 3)) * rng.uniform(0.2, 2.0, (n, 1, 1, 3))
         + rng.uniform(-1.5, 1.5, (n, 1, 1, 3)))
    return x.astype("float32")


@pytest.fixture(scope="module")
def eight_bit_tiny():
    """A narrow 8-bit BNext-T (32x32x3, width 0.125, logits), binary (tau < 1e-7) before its
    BN statistics and FakeQuant ranges are calibrated on a few training-mode batches (with
    tau = 1 the calibrated statistics would not fit the binary convs' larger outputs)."""
    keras.utils.set_random_seed(0)
    model = zoo.BNextTiny(input_shape=(32, 32, 3), classes=10, width_multiplier=0.125, bits=8,
                          classifier_activation=None)
    assert set_tau(model, 1e-8) == 31
    for step in range(20):
        model(_images_32(16, seed=10 + step), training=True)
    return model


def test_eight_bit_bnext_converts_strictly_to_int8_ops_around_the_bconvs(eight_bit_tiny):
    """convert(int8=True, strict=True): every binary conv one LceBconv2d (bitpacked input,
    float output), the stem conv, the 62 SE convs (two per unit), their sigmoid gates and the
    classifier int8 ops (int8 input, weights and output), no float compute op kept."""
    from kbnn.converters import convert

    model = eight_bit_tiny
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flatbuffer = convert(model, int8=True, strict=True)
    assert not [str(w.message) for w in caught if "kbnn.converters" in str(w.message)]
    typed = _tensor_types(flatbuffer)
    counts = collections.Counter(name for name, _, _, _ in typed)
    assert counts["LceBconv2d"] == len(binary_convs(model)) == 31
    assert all(ins[0] == "INT32" and outs == ["FLOAT32"] for name, ins, outs, _ in typed
               if name == "LceBconv2d")
    se = [t for t in typed if t[0] == "CONV_2D" and t[3][1:3] == (1, 1)]
    stem = [t for t in typed if t[0] == "CONV_2D" and t[3][1:3] == (33, 33)]  # explicit pad
    assert len(se) == 62 and len(stem) == 1 and counts["CONV_2D"] == 63
    for _, ins, outs, _ in se + stem:
        assert ins[:2] == ["INT8", "INT8"] and outs == ["INT8"]
    assert counts["LOGISTIC"] == 31
    assert all(ins == ["INT8"] and outs == ["INT8"] for name, ins, outs, _ in typed
               if name == "LOGISTIC")
    dense = [t for t in typed if t[0] == "FULLY_CONNECTED"]
    assert len(dense) == 1 and dense[0][1][:2] == ["INT8", "INT8"] and dense[0][2] == ["INT8"]


def test_eight_bit_bnext_int8_flatbuffer_agrees_with_keras(eight_bit_tiny):
    """The flatbuffers agree with Keras as far as quantization's discontinuities allow.

    Every FakeQuant rounds to a grid, and every binary activation is a sign, so a tiny
    difference in computation order (TFLite's conv vs Keras' float32 conv) moves a value that
    sits at a rounding tie or at a sign threshold by a whole step, and BNext's 31 binary convs
    compound such flips. Measured here (64 images): in float emulation (int8=False) top-1
    agreement 100% and 98.1% of the logits within 1e-3 (one image differs: a near-tie in a
    FakeQuant); with int8 ops, where TFLite's integer requantization and LOGISTIC round a
    further 0.2% of the stem conv's outputs (and some SE values) one step differently, 99.9%
    of block 2's outputs within 0.1, and at the logits top-1 agreement 89% and 73% of the
    values within 0.15 + 5%. The bounds below are those, with margin; a structural error (a
    wrong range, a missing op, a misplaced BN) breaks them by far."""
    from kbnn.converters import convert, verify

    model = eight_bit_tiny
    x = _images_32(64, seed=2)
    assert len(set(np.argmax(np.asarray(model(x)), axis=-1).tolist())) > 1
    emulated = verify(model, convert(model, strict=True), x, atol=1e-3, rtol=1e-4)
    assert emulated.top1_agreement == 1.0 and emulated.within_tolerance >= 0.95, \
        emulated.table()
    head = keras.Model(model.input, model.get_layer("block2").output)
    first = verify(head, convert(head, int8=True, strict=True), x, atol=0.1, rtol=0.01)
    assert first.within_tolerance >= 0.99, first.table()
    whole = verify(model, convert(model, int8=True, strict=True), x, atol=0.15, rtol=0.05)
    assert whole.top1_agreement >= 0.8 and whole.within_tolerance >= 0.6, whole.table()
