"""The contract every block in kbnn.blocks keeps, checked on a two-block digits model per block:

    Input(8, 8, 1) -> float 3x3 stem (32) + BN -> block 1 -> block 2 -> GAP -> Dense(10)

it trains with plain `model.fit`, survives a `.keras` round trip bit for bit, converts with
`strict=True` to exactly one `LceBconv2d` per binary conv (binary convs counted by walking the
model, ops read from the flatbuffer with TensorFlow's schema), the converted model agrees with
Keras, and `kbnn.profile` gives the BOPs/FLOPs counted here by hand (METHODS.md §0).

Each block's model trains once (module-scoped, parametrized fixture). What is specific to one
block (numpy reference forwards, hand values, argument checks) lives in test_<block>_block.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import pytest
from blocks_helpers import (
    STEM_FLOPS,
    binary_convs,
    classifier_flops,
    conv_macs,
    flatbuffer_ops,
    random_inputs,
    train_on_digits,
    two_block_model,
)
from kbnn.converters import convert, verify

import kbnn
from kbnn.blocks import AdaBinBlock, BiRealBlock, ReActNetBlock, XnorBlock

EPOCHS = 3


@dataclasses.dataclass(frozen=True)
class BlockCase:
    """One block's two-block digits model and its hand-counted expectations."""

    block: type
    blocks: tuple[tuple[str, dict], tuple[str, dict]]  # (layer name, constructor kwargs) x 2
    binary_convs: int  # binary convs in the model, counted by hand from the block's design
    float_convs: int  # float CONV_2D ops left in the flatbuffer
    bops: int
    flops: int
    totals: tuple[int, int]  # (bops, flops) as plain numbers, a check on the arithmetic
    accuracy_floor: float = 0.8  # chance is 0.1; about 0.95 measured for every block
    trained_checks: tuple[Callable[[keras.Model], None], ...] = ()


def _adabin_weight_centres_are_nonzero(model: keras.Model) -> None:
    """AdaBin's weight centre is what the single LceBconv2d has to fold (the window-sum
    correction): make sure the trained kernels really have one, so the count is not vacuous."""
    for conv in binary_convs(model):
        assert np.all(np.asarray(conv.kernel).mean(axis=(0, 1, 2)) != 0.0), conv.name


CASES = {
    # 8x8x32 -> BiRealBlock(32) -> BiRealBlock(64, s2) -> 4x4x64; one binary 3x3 conv per block,
    # float convs: the stem and the 1x1 shortcut conv.
    "bireal": BlockCase(
        BiRealBlock, (("same", {"filters": 32}), ("down", {"filters": 64, "strides": 2})),
        binary_convs=2, float_convs=2,
        bops=conv_macs(3, 32, 32, 8, 8) + conv_macs(3, 32, 64, 4, 4),
        flops=STEM_FLOPS + conv_macs(1, 32, 64, 4, 4) + classifier_flops(64),
        totals=(884_736, 51_840)),
    # 8x8x32 -> ReActNetBlock(64, s2) [doubling: 3x3 + two 1x1] -> ReActNetBlock(64) [3x3 + 1x1];
    # ReActNet-A shortcuts have no convs: the stem is the only float conv.
    "reactnet": BlockCase(
        ReActNetBlock,
        (("double", {"out_channels": 64, "strides": 2}), ("same", {"out_channels": 64})),
        binary_convs=5, float_convs=1,
        bops=(conv_macs(3, 32, 32, 4, 4) + 2 * conv_macs(1, 32, 32, 4, 4)
              + conv_macs(3, 64, 64, 4, 4) + conv_macs(1, 64, 64, 4, 4)),
        flops=STEM_FLOPS + classifier_flops(64),
        totals=(835_584, 19_072)),
    # 8x8x32 -> XnorBlock(32) -> XnorBlock(64, s2, with K) -> 4x4x64; float convs: the stem and
    # K's one-channel box filter, which is not a layer and, as in the published XNOR-Net counts,
    # not counted as FLOPs.
    "xnor": BlockCase(
        XnorBlock,
        (("plain", {"filters": 32}),
         ("scaled", {"filters": 64, "strides": 2, "activation_scale": True})),
        binary_convs=2, float_convs=2,
        bops=conv_macs(3, 32, 32, 8, 8) + conv_macs(3, 32, 64, 4, 4),
        flops=STEM_FLOPS + classifier_flops(64),
        totals=(884_736, 19_072)),
    # 8x8x32 -> AdaBinBlock(32) [zero pad] -> AdaBinBlock(64, s2) [+1-level pad] -> 4x4x64;
    # float convs: the stem and the shortcut's 1x1 conv.
    "adabin": BlockCase(
        AdaBinBlock,
        (("zero_pad", {"filters": 32}),
         ("one_pad", {"filters": 64, "strides": 2, "pad_values": 1.0})),
        binary_convs=2, float_convs=2,
        bops=conv_macs(3, 32, 32, 8, 8) + conv_macs(3, 32, 64, 4, 4),
        flops=STEM_FLOPS + conv_macs(1, 32, 64, 4, 4) + classifier_flops(64),
        totals=(884_736, 51_840),
        trained_checks=(_adabin_weight_centres_are_nonzero,)),
}


class Trained(NamedTuple):
    case: BlockCase
    model: keras.Model
    losses: list
    accuracy: float


@pytest.fixture(scope="module", params=list(CASES.values()), ids=list(CASES))
def trained(request) -> Trained:
    case = request.param
    keras.utils.set_random_seed(0)
    model = two_block_model(*(case.block(name=name, **kwargs) for name, kwargs in case.blocks))
    losses, accuracy, _ = train_on_digits(model, EPOCHS)
    return Trained(case, model, losses, accuracy)


@pytest.fixture(scope="module")
def flatbuffer(trained) -> bytes:
    return convert(trained.model, strict=True)


def test_two_block_model_trains_on_digits(trained):
    assert trained.losses[-1] < 0.5 * trained.losses[0], trained.losses
    assert trained.accuracy > trained.case.accuracy_floor, trained.accuracy


def test_keras_round_trip_gives_identical_outputs(trained, tmp_path):
    model, case = trained.model, trained.case
    path = str(tmp_path / "two_blocks.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    for name, kwargs in case.blocks:
        config = loaded.get_layer(name).get_config()
        assert type(loaded.get_layer(name)) is case.block
        assert config == model.get_layer(name).get_config()
        assert {key: config[key] for key in kwargs} == kwargs  # the constructor arguments


def test_strict_conversion_gives_one_bconv_per_binary_conv(trained, flatbuffer):
    model, case = trained.model, trained.case
    for check in case.trained_checks:
        check(model)
    convs = binary_convs(model)
    assert len(convs) == case.binary_convs
    ops = flatbuffer_ops(flatbuffer)
    # an LceBconv2d's filter is (C_out, kh, kw, C_in[/32 packed]): one op per conv, same width
    bconv_widths = [shapes[1][0] for name, shapes in ops if name == "LceBconv2d"]
    assert len(bconv_widths) == len(convs)
    assert sorted(bconv_widths) == sorted(conv.filters for conv in convs)
    assert [name for name, _ in ops].count("CONV_2D") == case.float_convs


def test_verify_agrees_with_keras(trained, flatbuffer):
    result = verify(trained.model, flatbuffer, random_inputs(200))
    assert result.top1_agreement >= 0.99
    assert result.max_abs_diff < 1e-3


def test_profile_counts_bops_and_flops_by_hand(trained):
    counts = kbnn.profile(trained.model)
    case = trained.case
    assert (counts.bops, counts.flops) == (case.bops, case.flops) == case.totals
