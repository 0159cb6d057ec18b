"""kbnn.profile / kbnn.summary: every expected count is written out by hand (docs/methods.md,
"Counting costs")."""

import warnings

import keras
import numpy as np
import pytest

import kbnn
from kbnn.layers import (
    QuantConv1D,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantSeparableConv2D,
)

BIN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}

# Hand counts of the reference model (input 8x8x3, batch 1):
#   stem     Conv2D(8, 3, same) float          8x8x8   params 3*3*3*8 + 8       FLOPs 3*3*3*8*8*8
#   bn       BatchNormalization(8)                     params 4*8 (gamma, beta, mean, var)
#   bconv    QuantConv2D(16, 3, s2, same) bin  4x4x16  1-bit 3*3*8*16           BOPs 3*3*8*16*4*4
#   bdw      QuantDepthwiseConv2D(3, M=2) bin  4x4x32  1-bit 3*3*16*2           BOPs 3*3*16*2*4*4
#   kconv    QuantConv2D(8, 3, valid), kernel quantizer only (float input)
#                                              2x2x8   1-bit 3*3*32*8, bias 8   FLOPs 3*3*32*8*2*2
#   flatten                                    32
#   bdense   QuantDense(12) binary                     1-bit 32*12, bias 12     BOPs 32*12
#   head     Dense(10) float                           params 12*10 + 10        FLOPs 12*10
BOPS = 3 * 3 * 8 * 16 * 4 * 4 + 3 * 3 * 16 * 2 * 4 * 4 + 32 * 12
FLOPS = 3 * 3 * 3 * 8 * 8 * 8 + 3 * 3 * 32 * 8 * 2 * 2 + 12 * 10
BINARY_PARAMS = 3 * 3 * 8 * 16 + 3 * 3 * 16 * 2 + 3 * 3 * 32 * 8 + 32 * 12
FLOAT_PARAMS = (3 * 3 * 3 * 8 + 8) + 4 * 8 + 8 + 12 + (12 * 10 + 10)
SIZE_BYTES = (BINARY_PARAMS * 1 + FLOAT_PARAMS * 32) / 8
FLOAT32_BYTES = (BINARY_PARAMS + FLOAT_PARAMS) * 4


def _binary_stage():
    return [
        QuantConv2D(16, 3, strides=2, padding="same", use_bias=False, name="bconv", **BIN),
        QuantDepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False,
                             input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                             name="bdw"),
        QuantConv2D(8, 3, kernel_quantizer="ste_sign", name="kconv"),
    ]


def _head(x):
    x = keras.layers.Flatten(name="flatten")(x)
    x = QuantDense(12, name="bdense", **BIN)(x)
    return keras.layers.Dense(10, name="head")(x)


def _stem(inputs):
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    return keras.layers.BatchNormalization(name="bn")(x)


def _flat_model():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    for layer in _binary_stage():
        x = layer(x)
    return keras.Model(inputs, _head(x), name="flat")


class _Stage(keras.layers.Layer):
    """A custom block holding kbnn layers as attributes (like a ReActNet block)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bconv, self.bdw, self.kconv = _binary_stage()

    def call(self, x):
        return self.kconv(self.bdw(self.bconv(x)))


def _custom_block_model():
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, _head(_Stage(name="stage")(_stem(inputs))), name="custom")


def _nested_model_model():
    inner_in = keras.Input((8, 8, 8))
    x = inner_in
    for layer in _binary_stage():
        x = layer(x)
    inner = keras.Model(inner_in, x, name="inner")
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, _head(inner(_stem(inputs))), name="nested")


def _assert_reference_totals(p):
    assert p.bops == BOPS == 23424
    assert p.flops == FLOPS == 23160
    assert p.ops == BOPS / 64 + FLOPS == 23526
    assert p.binary_params == BINARY_PARAMS == 4128
    assert p.float_params == FLOAT_PARAMS == 406
    assert p.size_bytes == SIZE_BYTES == 2140
    assert p.float32_size_bytes == FLOAT32_BYTES == 18136
    assert p.binary_mac_fraction == pytest.approx(23424 / (23424 + 23160))
    assert p.compression_ratio == pytest.approx(18136 / 2140)
    assert p.unknown_mac_layers == ()


def test_profile_counts_reference_model_by_hand():
    model = _flat_model()
    p = kbnn.profile(model)
    _assert_reference_totals(p)
    assert p.binary_params + p.float_params == model.count_params()
    assert p.total_params == model.count_params()


def test_profile_per_layer_rows():
    rows = {r.name: r for r in kbnn.profile(_flat_model()).layers}
    assert list(rows) == ["stem", "bn", "bconv", "bdw", "kconv", "flatten", "bdense", "head"]
    expected = {  # name: (binary MACs, float MACs, {bits: params}, input bits, kernel bits)
        "stem": (0, 3 * 3 * 3 * 8 * 8 * 8, {32: 3 * 3 * 3 * 8 + 8}, 32, (32,)),
        "bn": (0, 0, {32: 4 * 8}, None, ()),
        "bconv": (3 * 3 * 8 * 16 * 4 * 4, 0, {1: 3 * 3 * 8 * 16}, 1, (1,)),
        "bdw": (3 * 3 * 16 * 2 * 4 * 4, 0, {1: 3 * 3 * 16 * 2}, 1, (1,)),
        "kconv": (0, 3 * 3 * 32 * 8 * 2 * 2, {1: 3 * 3 * 32 * 8, 32: 8}, 32, (1,)),
        "flatten": (0, 0, {}, None, ()),
        "bdense": (32 * 12, 0, {1: 32 * 12, 32: 12}, 1, (1,)),
        "head": (0, 12 * 10, {32: 12 * 10 + 10}, 32, (32,)),
    }
    for name, (bmacs, fmacs, params, in_bits, k_bits) in expected.items():
        r = rows[name]
        assert (r.binary_macs, r.float_macs, r.params, r.input_bits, r.kernel_bits) == (
            bmacs, fmacs, params, in_bits, k_bits), name
    assert rows["bdw"].output_shape == (1, 4, 4, 32)
    assert rows["kconv"].output_shape == (1, 2, 2, 8)
    assert rows["kconv"].memory_bytes == (3 * 3 * 32 * 8 * 1 + 8 * 32) / 8


@pytest.mark.parametrize("build", [_custom_block_model, _nested_model_model])
def test_nested_layers_give_the_same_counts(build):
    model = build()
    p = kbnn.profile(model)
    _assert_reference_totals(p)
    assert p.binary_params + p.float_params == model.count_params()
    prefix = "stage/" if build is _custom_block_model else "inner/"
    rows = {r.name: r for r in p.layers}
    assert rows[prefix + "bdw"].binary_macs == 3 * 3 * 16 * 2 * 4 * 4
    assert rows[prefix + "bdw"].output_shape == (1, 4, 4, 32)
    assert rows[prefix + "kconv"].float_macs == 3 * 3 * 32 * 8 * 2 * 2


def test_profile_restores_layer_calls():
    model = _custom_block_model()
    kbnn.profile(model)
    for layer in model._flatten_layers(include_self=True, recursive=True):
        assert "call" not in layer.__dict__, layer.name
    x = np.ones((2, 8, 8, 3), "float32")
    assert model(x).shape == (2, 10)


def test_summary_prints_every_layer_and_the_totals():
    lines = []
    kbnn.summary(_nested_model_model(), print_fn=lines.append)
    text = "\n".join(lines)
    names = ["stem", "bn", "inner/bconv", "inner/bdw", "inner/kconv", "flatten", "bdense", "head"]
    # The default table fits 100 columns: a long "name (Class)" puts the class on the next line.
    assert max(len(line) for line in lines) <= 100
    for name in names:
        assert any(line == name or line.startswith((name + " ", name + "  "))
                   for line in lines), name
    wide = []
    kbnn.summary(_nested_model_model(), print_fn=wide.append, wide=True)
    for name in names:
        assert any(line.startswith(name + " (") for line in wide), name
    assert "Total parameters: 4,534 (binary: 4,128, other: 406)" in text
    assert "Model size (binary weights at 1 bit): 2,140 B (2.09 KiB)" in text
    assert "Float-32 equivalent size: 18,136 B (17.71 KiB)" in text
    assert f"Compression ratio: {18136 / 2140:.2f}x" in text  # 8.47x
    assert "BOPs (binary MACs): 23,424" in text
    assert "FLOPs (float MACs): 23,160" in text
    assert "OPs = BOPs/64 + FLOPs: 23,526 " in text
    assert f"Binary MAC fraction: {100 * 23424 / 46584:.2f} %" in text  # 50.28 %
    bdw_line = next(line for line in lines if line.startswith("inner/bdw"))
    assert bdw_line.split()[-2:] == [f"{3 * 3 * 16 * 2 * 4 * 4:,}", "0"]


def test_separable_pointwise_part_is_float():
    inputs = keras.Input((6, 6, 4))
    x = QuantSeparableConv2D(8, 3, depth_multiplier=2, use_bias=False, name="sep",
                             input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                             pointwise_quantizer="ste_sign")(inputs)
    p = kbnn.profile(keras.Model(inputs, x))
    # depthwise 3*3*4*2 on a 4x4 output (binary); pointwise 1*1*8*8 on 4x4 (reads the
    # depthwise output, which is not binary).
    assert p.bops == 3 * 3 * 4 * 2 * 4 * 4
    assert p.flops == 8 * 8 * 4 * 4
    assert p.binary_params == 3 * 3 * 4 * 2 + 8 * 8
    assert p.layers[0].kernel_bits == (1, 1)


def test_multi_bit_kernels_and_inputs():
    inputs = keras.Input((5, 5, 2))
    x = QuantConv2D(4, 3, use_bias=False, name="k2",
                    kernel_quantizer=kbnn.quantizers.DoReFa(k_bit=2, mode="weights"))(inputs)
    x = QuantConv2D(3, 3, use_bias=False, name="a2w1", input_quantizer="dorefa",
                    kernel_quantizer="ste_sign")(x)
    p = kbnn.profile(keras.Model(inputs, x))
    assert p.bops == 0  # a 2-bit input is not binary
    assert p.flops == 3 * 3 * 2 * 4 * 3 * 3 + 3 * 3 * 4 * 3 * 1 * 1
    assert p.binary_params == 3 * 3 * 4 * 3
    assert p.float_params == 3 * 3 * 2 * 4  # the 2-bit kernel counts as "other"
    assert p.size_bytes == (3 * 3 * 2 * 4 * 2 + 3 * 3 * 4 * 3 * 1) / 8
    assert p.layers[0].params == {2: 3 * 3 * 2 * 4}
    assert p.layers[1].input_bits == 2


def test_shared_layer_counts_macs_per_call_and_params_once():
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, name="shared")
    x = shared(shared(inputs))
    p = kbnn.profile(keras.Model(inputs, x))
    assert p.flops == 2 * 6 * 6
    assert p.float_params == 6 * 6 + 6
    assert p.layers[0].calls == 2


def test_conv1d_dense_on_sequence_and_transpose():
    inputs = keras.Input((10, 3))
    x = QuantConv1D(4, 3, padding="causal", name="c1", **BIN)(inputs)  # 10 x 4
    x = keras.layers.Dense(5, name="seq_dense")(x)  # applied at each of the 10 steps
    p1 = kbnn.profile(keras.Model(inputs, x))
    assert (p1.bops, p1.flops) == (3 * 3 * 4 * 10, 4 * 5 * 10)

    inputs = keras.Input((3, 3, 2))
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, name="up")(inputs)  # 7x7x4
    p2 = kbnn.profile(keras.Model(inputs, x))
    assert p2.flops == 3 * 3 * 4 * 2 * 3 * 3  # k*k*C_out*C_in per input position
    assert p2.layers[0].output_shape == (1, 7, 7, 4)


class _MatMul(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 5))

    def call(self, x):
        return x @ self.w


class _Holder(keras.layers.Layer):
    """Owns a per-channel weight directly and a conv it never calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.unused = keras.layers.Conv2D(2, 1, name="unused")
        self.dense = keras.layers.Dense(4, name="d")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.gain = self.add_weight(shape=(4,), initializer="ones")

    def call(self, x):
        return self.dense(x) * self.gain


def test_unknown_weighted_layers_warn_and_print_question_marks():
    inputs = keras.Input((3,))
    x = _Holder(name="holder")(inputs)
    x = _MatMul(name="mm")(x)
    model = keras.Model(inputs, x)
    with pytest.warns(UserWarning, match="unknown MACs"):
        p = kbnn.profile(model)
    assert set(p.unknown_mac_layers) == {"mm", "holder/unused"}
    assert p.flops == 3 * 4  # holder/d only; the per-channel gain and `mm` add nothing
    assert p.float_params == model.count_params() == (3 * 4 + 4) + 4 + 4 * 5
    rows = {r.name: r for r in p.layers}
    assert rows["holder"].params == {32: 4} and rows["holder"].float_macs == 0
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kbnn.summary(model, print_fn=lines.append)
    mm_line = next(line for line in lines if line.startswith("mm ("))
    assert mm_line.split()[-2:] == ["?", "?"]


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = QuantConv2D(2, 3, use_bias=False, **BIN)
        self.fc = keras.layers.Dense(3)

    def call(self, x):
        return self.fc(keras.ops.mean(self.conv(x), axis=(1, 2)))


def test_subclassed_model_needs_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        kbnn.profile(_Subclassed())
    p = kbnn.profile(_Subclassed(), input_shape=(5, 5, 1))
    assert p.bops == 3 * 3 * 1 * 2 * 3 * 3
    assert p.flops == 2 * 3
    assert (p.binary_params, p.float_params) == (3 * 3 * 1 * 2, 2 * 3 + 3)


def test_dynamic_input_shape_is_reported():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="static input dimensions"):
        kbnn.profile(model)
    assert kbnn.profile(model, input_shape=(4, 4, 3)).flops == 3 * 3 * 3 * 4 * 2 * 2


def test_sequential_model_and_ops_arithmetic():
    model = keras.Sequential([keras.Input((5,)), QuantDense(4, name="qd", **BIN),
                              keras.layers.Dense(3, name="d")])
    p = kbnn.profile(model)
    assert (p.bops, p.flops) == (5 * 4, 4 * 3)
    assert p.ops == 20 / 64 + 12
    assert p.binary_mac_fraction == 20 / 32
    assert (p.binary_params, p.float_params) == (5 * 4, 4 + 4 * 3 + 3)
    assert p.size_bytes == (20 * 1 + 19 * 32) / 8
    assert p.compression_ratio == (39 * 4) / ((20 + 19 * 32) / 8)


# ------------------------------------------------------- profiling leaves every layer untouched


def _all_layers(model):
    from kbnn._keras_compat import flatten_layers

    return flatten_layers(model, include_self=True, recursive=True)


def _snapshot(model):
    """Every layer (quantizers included) -> its attribute names and the identity of each value.

    The model is called once first: Keras itself marks a layer on its first call (`_called`),
    which profiling a never-called model would then do too."""
    model(np.zeros((1,) + tuple(model.inputs[0].shape[1:]), "float32"), training=False)
    return _vars(model)


def _vars(model):
    """id(layer) -> (layer name, a copy of `vars(layer)`, which holds every value alive)."""
    return {id(layer): (layer.name, dict(vars(layer))) for layer in _all_layers(model)}


def _changes(before, after) -> list:
    if before.keys() != after.keys():
        return ["layers"]
    found = []
    for key, (name, attrs) in before.items():
        now = after[key][1]
        if now.keys() != attrs.keys():
            found.append((name, sorted(set(now) ^ set(attrs))))
        found += [(name, k) for k in attrs if now[k] is not attrs[k]]
    return found


def _assert_unchanged(before, after):
    assert _changes(before, after) == []


@pytest.mark.parametrize("build", [_flat_model, _custom_block_model, _nested_model_model])
def test_profile_and_summary_set_no_attribute_on_any_layer(build):
    model = build()
    assert any(isinstance(layer, kbnn.quantizers.Quantizer) for layer in _all_layers(model))
    before = _snapshot(model)
    kbnn.profile(model)
    _assert_unchanged(before, _vars(model))
    kbnn.summary(model, print_fn=lambda line: None)
    _assert_unchanged(before, _vars(model))


_WATCH: dict = {}


class _Watch(keras.layers.Layer):
    """Checks, while the model runs, that no layer's attributes differ from `_WATCH["before"]`
    (so nothing is patched during the pass either, not only after it)."""

    def call(self, x):
        if "model" in _WATCH:
            _WATCH["changes"] += _changes(_WATCH["before"], _vars(_WATCH["model"]))
            _WATCH["calls"] += 1
        return x


def test_no_layer_is_patched_while_profiling():
    inputs = keras.Input((8, 8, 3))
    x = _Stage(name="stage")(_stem(inputs))
    model = keras.Model(inputs, _head(_Watch(name="watch")(x)), name="watched")
    _WATCH.update(model=model, before=_snapshot(model), changes=[], calls=0)
    try:
        _assert_reference_totals(kbnn.profile(model))
        assert _WATCH["calls"] >= 1 and _WATCH["changes"] == []
    finally:
        _WATCH.clear()


def test_profile_reads_the_quantized_weights_map(monkeypatch):
    seen = []
    original = kbnn.layers.QuantizedLayerMixin.quantized_weights

    def spy(self):
        seen.append(self.name)
        return original(self)

    monkeypatch.setattr(kbnn.layers.QuantizedLayerMixin, "quantized_weights", spy)
    inputs = keras.Input((6, 6, 4))
    x = QuantSeparableConv2D(8, 3, use_bias=False, name="sep", input_quantizer="ste_sign",
                             depthwise_quantizer="ste_sign")(inputs)  # float pointwise kernel
    p = kbnn.profile(keras.Model(inputs, x))
    assert "sep" in seen
    assert p.layers[0].kernel_bits == (1, 32)
    assert p.bops == 3 * 3 * 4 * 4 * 4
    assert p.flops == 4 * 8 * 4 * 4
    assert (p.binary_params, p.float_params) == (3 * 3 * 4, 4 * 8)


class _ConvTwice(keras.layers.Layer):
    """A custom block holding one binary conv that it calls twice."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = QuantConv2D(3, 3, padding="same", use_bias=False, name="conv", **BIN)

    def call(self, x):
        return self.conv(keras.activations.relu(self.conv(x)))


def test_custom_block_calling_its_conv_twice_counts_both_calls():
    inputs = keras.Input((5, 5, 3))
    x = _ConvTwice(name="twice")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    before = _snapshot(model)
    p = kbnn.profile(model)
    _assert_unchanged(before, _vars(model))
    rows = {r.name: r for r in p.layers}
    assert list(rows) == ["twice/conv", "pool", "fc"]
    conv = rows["twice/conv"]
    assert conv.calls == 2
    assert (conv.input_shape, conv.output_shape) == ((1, 5, 5, 3), (1, 5, 5, 3))
    assert conv.binary_macs == p.bops == 2 * 3 * 3 * 3 * 3 * 5 * 5
    assert conv.params == {1: 3 * 3 * 3 * 3}
    assert p.flops == 3 * 2
    assert p.binary_params == 3 * 3 * 3 * 3


def test_shared_layer_calls_get_their_own_shapes():
    inputs = keras.Input((4, 6))
    seq = keras.layers.Dense(6, name="seq")
    x = keras.layers.Cropping1D((0, 2), name="crop")(seq(inputs))  # 4 steps, then 2
    p = kbnn.profile(keras.Model(inputs, seq(x)))
    assert [r.name for r in p.layers] == ["seq", "crop"]
    row = p.layers[0]
    assert row.calls == 2
    assert (row.input_shape, row.output_shape) == ((1, 4, 6), (1, 4, 6))  # the first call
    assert p.flops == 6 * 6 * 4 + 6 * 6 * 2


def test_layers_without_ops_keep_their_place_and_regularizers_do_not_hide_outputs():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activity_regularizer="l2", name="first")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)  # runs no op at inference
    x = keras.layers.Dense(3, activity_regularizer="l1", name="last")(x)
    p = kbnn.profile(keras.Model(inputs, x))
    assert [r.name for r in p.layers] == ["first", "drop", "last"]
    rows = {r.name: r for r in p.layers}
    assert rows["first"].output_shape == (1, 5)
    assert rows["last"].output_shape == (1, 3)  # not the regularizer's scalar loss
    assert p.flops == 6 * 5 + 5 * 3


def test_profile_with_a_lora_kernel_counts_the_kernel_variable():
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(4, name="lora")
    model = keras.Model(inputs, dense(inputs))
    dense.enable_lora(2)
    p = kbnn.profile(model)
    assert p.flops == 6 * 4
    assert p.float_params == model.count_params() == 6 * 4 + 4 + 6 * 2 + 2 * 4
    assert p.layers[0].params == {32: model.count_params()}


def test_profile_in_a_plain_context_leaves_no_recording_behind():
    import tensorflow as tf
    from tensorflow.python.framework import op_callbacks

    assert not tf.distribute.has_strategy()
    model = _custom_block_model()
    first = kbnn.profile(model)
    _assert_reference_totals(first)
    assert not op_callbacks.should_invoke_op_callbacks()
    assert kbnn.profile(model) == first
    assert model(np.ones((2, 8, 8, 3), "float32")).shape == (2, 10)
