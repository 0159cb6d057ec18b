"""Blocks take their quantizers (`input_quantizer`, `kernel_quantizer`) and declare their
(binary conv, BN) pairs.

* other binarizers (IR-Net's, BinaryNet's STE, ...) in every block: the sub-convs hold the given
  quantizer types, one instance per conv; string, config dict and instance forms;
* None gives a float block (checked against a numpy float reference);
* the `.keras` round trip is exact (outputs, configs, quantizer types) and strict conversion
  gives one `LceBconv2d` per binary conv (ops read from the flatbuffer with TensorFlow's schema,
  binary convs counted by walking the model);
* `batch_norm_pairs()` lists the pairs read off each block's structure by hand, and exactly
  those BNs go through `kbnn.export_mode.call_layer`.
"""

import keras
import numpy as np
import pytest
from blocks_helpers import (
    as_f64,
    binary_convs,
    flatbuffer_ops,
    np_bn,
    np_conv2d_same,
    np_shortcut,
    random_inputs,
    randomize,
    single_block_model,
    two_block_model,
)

from kbnn.blocks import AdaBinBlock, BiRealBlock, ReActNetBlock, XnorBlock
from kbnn.converters import convert
from kbnn.export_mode import export_scope
from kbnn.quantizers import AdaBinActivation, EDESign, Quantizer, RSign


def _types(conv):
    return (type(conv.input_quantizer).__name__, type(conv.kernel_quantizer).__name__)


def _convs(block):
    """The block's QuantConv2D sub-layers, read off its attributes by hand."""
    if isinstance(block, ReActNetBlock):
        return [block.conv3x3, *block.convs1x1]
    return [block.conv]


# (block, input channels, expected (input, kernel) quantizer types of every conv)
OTHER_QUANTIZERS = {
    "reactnet_ste": (lambda: ReActNetBlock(8, input_quantizer="ste_sign",
                                           kernel_quantizer="ste_sign"),
                     8, ("SteSign", "SteSign")),
    "reactnet_double_ste": (lambda: ReActNetBlock(16, strides=2, input_quantizer="ste_sign",
                                                  kernel_quantizer="ste_sign"),
                            8, ("SteSign", "SteSign")),
    "reactnet_double_irnet": (lambda: ReActNetBlock(16, input_quantizer="ede_sign",
                                                    kernel_quantizer="libra_weight"),
                              8, ("EDESign", "LibraSign")),
    "bireal_irnet": (lambda: BiRealBlock(16, strides=2, input_quantizer="ede_sign",
                                         kernel_quantizer="libra_weight"),
                     8, ("EDESign", "LibraSign")),
    "xnor_bireal": (lambda: XnorBlock(8, input_quantizer="approx_sign",
                                      kernel_quantizer="magnitude_aware_sign"),
                    8, ("ApproxSign", "MagnitudeAwareSign")),
    "adabin_irnet": (lambda: AdaBinBlock(8, input_quantizer="ede_sign",
                                         kernel_quantizer="libra_weight"),
                     8, ("EDESign", "LibraSign")),
}


@pytest.mark.parametrize("case", list(OTHER_QUANTIZERS))
def test_sub_convs_use_the_given_quantizers(case):
    make, channels, expected = OTHER_QUANTIZERS[case]
    block = make()
    block.build((None, 8, 8, channels))
    convs = _convs(block)
    assert [_types(conv) for conv in convs] == [expected] * len(convs)
    assert block.binary_layers == convs
    # one quantizer layer per conv: no two convs share one
    quantizers = [q for conv in convs for q in (conv.input_quantizer, conv.kernel_quantizer)]
    assert len({id(q) for q in quantizers}) == 2 * len(convs)


def test_reactnet_doubling_form_without_rsign_has_no_learnable_bias():
    block = ReActNetBlock(16, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    block.build((None, 6, 6, 8))
    assert block.doubles_channels and block.move is None
    rsign = ReActNetBlock(16, input_quantizer=RSign())  # an RSign instance with default args
    rsign.build((None, 6, 6, 8))
    assert type(rsign.move).__name__ == "LearnableBias"
    assert [_types(c) for c in rsign.convs1x1] == [("ApproxSign", "ScaledSign")] * 2
    assert _types(rsign.conv3x3) == ("RSign", "ScaledSign")


def test_reactnet_doubling_form_refuses_an_rsign_without_bias_equivalent():
    block = ReActNetBlock(16, input_quantizer=RSign(threshold_initializer="ones"))
    with pytest.raises(ValueError, match=r"`input_quantizer` of ReActNetBlock .*RSign with its "
                                         r"default arguments.*Received input_quantizer="):
        block(keras.Input((4, 4, 8)))
    same = ReActNetBlock(8, input_quantizer=RSign(threshold_initializer="ones"))
    same.build((None, 4, 4, 8))  # the same-width form has no shared sign: fine
    np.testing.assert_array_equal(np.asarray(same.conv3x3.input_quantizer.threshold), 1.0)


def test_config_dict_and_instance_arguments_give_fresh_copies():
    """A dict is resolved for each conv; an instance is copied from its config, never used."""
    given = EDESign(k=3.0, t=0.5)
    block = ReActNetBlock(16, input_quantizer=given,
                          kernel_quantizer={"class_name": "libra_weight",
                                            "config": {"k": 2.0, "t": 0.25}})
    block.build((None, 4, 4, 8))
    for conv in _convs(block):
        assert conv.input_quantizer is not given
        assert (float(conv.input_quantizer.k), float(conv.input_quantizer.t)) == (3.0, 0.5)
        assert (float(conv.kernel_quantizer.k), float(conv.kernel_quantizer.t)) == (2.0, 0.25)
    assert not given.built  # the argument itself was never built or used
    # the two 1x1 convs have independent variables
    a, b = block.convs1x1
    a.input_quantizer.t.assign(7.0)
    assert float(b.input_quantizer.t) == 0.5


def test_parametrised_quantizer_gets_one_copy_per_conv_in_the_doubling_form():
    block = ReActNetBlock(16, input_quantizer=AdaBinActivation(), kernel_quantizer="adabin_weight")
    block.build((None, 4, 4, 8))
    alphas = [conv.input_quantizer.alpha for conv in block.convs1x1]
    assert alphas[0] is not alphas[1]
    assert block.move is None


@pytest.mark.parametrize("block_cls, kwargs", [
    (ReActNetBlock, {"out_channels": 8}),
    (BiRealBlock, {"filters": 8}),
    (XnorBlock, {"filters": 8}),
    (AdaBinBlock, {"filters": 8}),
])
@pytest.mark.parametrize("argument", ["input_quantizer", "kernel_quantizer"])
@pytest.mark.parametrize("value", ["no_such_sign", 3, {"class_name": "Dense", "config": {}}])
def test_bad_quantizer_arguments(block_cls, kwargs, argument, value):
    name = block_cls.__name__
    with pytest.raises(ValueError, match=rf"^Invalid value for argument `{argument}` of "
                                         rf"{name}\. Expected .*Received {argument}="):
        block_cls(**kwargs, **{argument: value})


class _NotFromConfig(Quantizer):
    """A quantizer whose config lacks its constructor argument: it cannot be copied."""

    precision = 1

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs, training=None):
        return inputs * self.scale


def test_quantizer_instance_that_cannot_be_copied_is_refused():
    with pytest.raises(ValueError, match=r"`kernel_quantizer` of BiRealBlock\. Expected a "
                                         r"quantizer that can be rebuilt from its config"):
        BiRealBlock(8, kernel_quantizer=_NotFromConfig(2.0))


def test_adabin_activation_form_and_input_quantizer():
    code = AdaBinBlock(8, activation_form="code")
    code.build((None, 4, 4, 8))
    assert code.conv.input_quantizer.form == "code"
    matching = AdaBinBlock(8, activation_form="code",
                           input_quantizer=AdaBinActivation(form="code"))
    matching.build((None, 4, 4, 8))
    assert matching.conv.input_quantizer.form == "code"
    with pytest.raises(ValueError, match=r"`input_quantizer` of AdaBinBlock.*form 'code'"):
        AdaBinBlock(8, input_quantizer=AdaBinActivation(form="code"))  # block form: "paper"
    with pytest.raises(ValueError, match=r"`activation_form` of AdaBinBlock.*'paper'"):
        AdaBinBlock(8, activation_form="code", input_quantizer="ste_sign")
    float_twin = AdaBinBlock(8, activation_form="code", input_quantizer=None,
                             kernel_quantizer=None)  # a float twin keeps the config's form
    float_twin.build((None, 4, 4, 8))
    assert float_twin.conv.input_quantizer is None


# --------------------------------------------------------------------------- float blocks

@pytest.mark.parametrize("make, channels", [
    (lambda: ReActNetBlock(8, input_quantizer=None, kernel_quantizer=None), 8),
    (lambda: ReActNetBlock(16, strides=2, input_quantizer=None, kernel_quantizer=None), 8),
    (lambda: BiRealBlock(16, strides=2, input_quantizer=None, kernel_quantizer=None), 8),
    (lambda: XnorBlock(8, input_quantizer=None, kernel_quantizer=None), 4),
    (lambda: AdaBinBlock(8, input_quantizer=None, kernel_quantizer=None), 8),
])
def test_none_gives_a_float_block(make, channels):
    block = make()
    block.build((None, 6, 6, channels))
    for conv in _convs(block):
        assert conv.input_quantizer is None and conv.kernel_quantizer is None
    assert block.binary_layers == [] and block.batch_norm_pairs() == []
    config = block.get_config()
    assert config["input_quantizer"] is None and config["kernel_quantizer"] is None


def test_float_bireal_block_matches_numpy_reference(rng):
    """out = BN(conv3x3(x, W)) + shortcut(x), no sign anywhere."""
    block = BiRealBlock(16, strides=2, input_quantizer=None, kernel_quantizer=None)
    model = single_block_model(block, (5, 5, 8))
    x = rng.normal(size=(2, 5, 5, 8))
    expected = np_bn(np_conv2d_same(x, as_f64(block.conv.kernel), 2), block.bn)
    expected = expected + np_shortcut(block, x)
    np.testing.assert_allclose(np.asarray(model(x.astype("float32"), training=False)),
                               expected, rtol=1e-4, atol=1e-4)


def test_float_reactnet_doubling_keeps_the_learnable_bias():
    """The float form of the shared RSign is the official `move21` without its sign."""
    block = ReActNetBlock(16, input_quantizer=None, kernel_quantizer=None)
    block.build((None, 4, 4, 8))
    assert type(block.move).__name__ == "LearnableBias"


# --------------------------------------------------------------- round trip and conversion

MODELS = {
    # block 1, block 2 of the digits two-block model (stem width 32), binary convs by hand
    "reactnet_ste": (lambda: (ReActNetBlock(64, strides=2, input_quantizer="ste_sign",
                                            kernel_quantizer="ste_sign", name="b1"),
                              ReActNetBlock(64, input_quantizer="ste_sign",
                                            kernel_quantizer="ste_sign", name="b2")), 5),
    "bireal_irnet": (lambda: (BiRealBlock(32, input_quantizer="ede_sign",
                                          kernel_quantizer="libra_weight", name="b1"),
                              BiRealBlock(64, strides=2, pad_values=1.0,
                                          input_quantizer=EDESign(k=2.0, t=1.0),
                                          kernel_quantizer="libra_weight", name="b2")), 2),
    "xnor_scaled": (lambda: (XnorBlock(32, input_quantizer="approx_sign",
                                       kernel_quantizer="scaled_sign", name="b1"),
                             XnorBlock(64, strides=2, input_quantizer="ste_sign",
                                       kernel_quantizer={"class_name": "ScaledSign",
                                                         "config": {"clip_value": 2.0}},
                                       name="b2")), 2),
    "adabin_irnet": (lambda: (AdaBinBlock(32, input_quantizer="ede_sign",
                                          kernel_quantizer="adabin_weight", name="b1"),
                              AdaBinBlock(64, strides=2, input_quantizer="rsign",
                                          kernel_quantizer="libra_weight", name="b2")), 2),
}


def _model(case):
    make, n_binary = MODELS[case]
    model = two_block_model(*make())
    randomize(model)
    return model, n_binary


@pytest.mark.parametrize("case", list(MODELS))
def test_keras_round_trip_is_exact(case, tmp_path):
    model, _ = _model(case)
    path = str(tmp_path / "blocks.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(16)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    for name in ("b1", "b2"):
        original, copy = model.get_layer(name), loaded.get_layer(name)
        assert copy.get_config() == original.get_config()
        assert [_types(c) for c in _convs(copy)] == [_types(c) for c in _convs(original)]


@pytest.mark.parametrize("case", list(MODELS))
def test_strict_conversion_gives_one_bconv_per_binary_conv(case):
    model, n_binary = _model(case)
    convs = binary_convs(model)
    assert len(convs) == n_binary
    ops = flatbuffer_ops(convert(model, strict=True))
    bconv_widths = [shapes[1][0] for name, shapes in ops if name == "LceBconv2d"]
    assert sorted(bconv_widths) == sorted(conv.filters for conv in convs)


# ------------------------------------------------------------------------ batch_norm_pairs

def test_batch_norm_pairs_by_hand():
    same = ReActNetBlock(8)
    same.build((None, 4, 4, 8))
    assert same.batch_norm_pairs() == [(same.conv3x3, same.bn3x3),
                                       (same.convs1x1[0], same.bns1x1[0])]
    double = ReActNetBlock(16, strides=2)
    double.build((None, 4, 4, 8))
    assert double.batch_norm_pairs() == [(double.conv3x3, double.bn3x3),
                                         (double.convs1x1[0], double.bns1x1[0]),
                                         (double.convs1x1[1], double.bns1x1[1])]
    bireal = BiRealBlock(16, strides=2)  # the shortcut's (float conv, BN) is not a pair
    bireal.build((None, 4, 4, 8))
    assert bireal.batch_norm_pairs() == [(bireal.conv, bireal.bn)]
    adabin = AdaBinBlock(16, strides=2)
    adabin.build((None, 4, 4, 8))
    assert adabin.batch_norm_pairs() == [(adabin.conv, adabin.bn)]
    xnor = XnorBlock(8)  # BN -> sign -> conv: the BN reads the block input, not a conv
    xnor.build((None, 4, 4, 8))
    assert xnor.batch_norm_pairs() == []
    step1 = ReActNetBlock(8, kernel_quantizer=None)  # binary inputs, real weights: no bconv
    step1.build((None, 4, 4, 8))
    assert step1.batch_norm_pairs() == []


def test_batch_norm_pairs_needs_a_built_block():
    with pytest.raises(ValueError, match="not built"):
        BiRealBlock(8).batch_norm_pairs()


def _zero(inputs):
    return inputs * 0.0


def test_paired_batch_norms_go_through_the_export_scope(rng):
    """While an export scope replaces a paired BN by zero, the block computes without that
    branch: BiReal (identity shortcut) gives x; ReActNet same-width with both BNs zeroed gives
    RPReLU_2(RPReLU_1(x) ... ) with zero conv branches, computed here with numpy."""
    x = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    bireal = BiRealBlock(8)
    single_block_model(bireal, (4, 4, 8))
    with export_scope({bn: _zero for _, bn in bireal.batch_norm_pairs()}):
        np.testing.assert_allclose(np.asarray(bireal(x, training=False)), x, atol=1e-6)

    react = ReActNetBlock(8)
    single_block_model(react, (4, 4, 8))
    with export_scope({bn: _zero for _, bn in react.batch_norm_pairs()}):
        got = np.asarray(react(x, training=False))

    def rprelu(layer, v):
        z = v - as_f64(layer.gamma)
        return np.where(z > 0, z, as_f64(layer.beta) * z) + as_f64(layer.zeta)

    out1 = rprelu(react.rprelu1, x.astype(np.float64))
    np.testing.assert_allclose(got, rprelu(react.rprelu2, out1), rtol=1e-5, atol=1e-5)


def test_unpaired_batch_norm_is_called_normally(rng):
    """XnorBlock's BN is not a pair: an export scope naming it does not reach it."""
    x = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    xnor = XnorBlock(8)
    single_block_model(xnor, (4, 4, 8))
    expected = np.asarray(xnor(x, training=False))
    with export_scope({xnor.bn: _zero}):
        np.testing.assert_array_equal(np.asarray(xnor(x, training=False)), expected)
