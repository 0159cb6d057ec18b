"""kbnn.zoo.torch_checkpoint: real `torch.save` files (tests/zoo/fixtures, written by
tests/zoo/make_torch_fixtures.py with torch) read without torch, compared exactly with the
values torch computed; hostile pickles refused without running anything."""

import collections
import pathlib
import sys

import keras
import numpy as np
import pytest

from kbnn.layers import LearnableBias, QuantConv2D
from kbnn.zoo import torch_checkpoint as tc

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def expected(name):
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def assert_exactly(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_torch_is_not_imported():
    tc.read_torch_checkpoint(FIXTURES / "dtypes.pt")
    assert "torch" not in sys.modules


@pytest.mark.parametrize("file", ["dtypes.pt", "dtypes_big_endian.pt"])
def test_dtypes_zip_format(file):
    state = tc.read_torch_checkpoint(FIXTURES / file)
    assert_exactly(state, expected("dtypes"))
    assert state["bf16"].dtype == np.float32  # bfloat16 arrives as float32
    assert state["flags"].dtype == np.bool_
    assert state["scalar"].shape == () and state["empty"].shape == (0, 3)
    assert isinstance(state, dict) and list(state) == list(expected("dtypes"))


def test_big_endian_values_are_native():
    state = tc.read_torch_checkpoint(FIXTURES / "dtypes_big_endian.pt")
    assert all(v.dtype.byteorder in ("=", "|") for v in state.values())


def test_views_sharing_one_storage():
    state = tc.read_torch_checkpoint(FIXTURES / "views.pt")
    assert_exactly(state, expected("views"))
    assert state["transposed"].flags.c_contiguous
    # Every view is its own copy: writing one does not change another.
    state["base"][0, 0] = -1
    assert state["transposed"][0, 0] == 0


def test_legacy_format():
    assert_exactly(tc.read_torch_checkpoint(FIXTURES / "legacy.pth"), expected("legacy"))


def test_nested_state_dict_and_dataparallel_prefix():
    state = tc.read_torch_checkpoint(FIXTURES / "tiny_model.pth.tar")
    assert "conv1.weight" in state and not any(k.startswith("module.") for k in state)
    assert state["binary_conv.weight"].shape == (576, 1)
    obj = tc.read_torch_object(FIXTURES / "tiny_model.pth.tar")
    assert obj["epoch"] == 3 and float(obj["best_top1_acc"]) == 12.5
    assert isinstance(obj["state_dict"], collections.OrderedDict)
    assert next(iter(obj["state_dict"])) == "module.conv1.weight"


def test_nested_under_model_key_and_explicit_key():
    state = tc.read_torch_checkpoint(FIXTURES / "nested_model.pt")
    np.testing.assert_array_equal(state["w"], np.ones((2, 2), np.float32))
    assert tc.read_torch_checkpoint(FIXTURES / "nested_model.pt", key="model").keys() == \
        state.keys()
    with pytest.raises(tc.CheckpointFormatError, match="'nope'.*found"):
        tc.read_torch_checkpoint(FIXTURES / "nested_model.pt", key="nope")


@pytest.mark.parametrize("file, global_name", [
    ("malicious_system.pt", "posix.system"),
    ("malicious_eval.pth", "builtins.eval"),
    ("whole_module.pt", "torch.nn.modules.linear.Linear"),
])
def test_hostile_pickles_are_refused_and_nothing_runs(file, global_name, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KBNN_PWNED_MARKER", str(marker))
    with pytest.raises(tc.UnsafeCheckpointError) as info:
        tc.read_torch_checkpoint(FIXTURES / file)
    assert f"checkpoint asks for {global_name}, which kbnn refuses to run" in str(info.value)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"hello")
    with pytest.raises(tc.CheckpointFormatError, match="not a PyTorch checkpoint"):
        tc.read_torch_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        tc.read_torch_checkpoint(tmp_path / "missing.pth")


def test_transforms():
    w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert tc.conv_kernel(w).shape == (4, 5, 3, 2)
    assert tc.conv_kernel(w)[1, 2, 0, 1] == w[1, 0, 1, 2]
    assert tc.linear_kernel(np.zeros((4, 3))).shape == (3, 4)
    assert tc.learnable_bias(np.arange(3.0).reshape(1, 3, 1, 1)).tolist() == [0, 1, 2]
    flat = w.reshape(-1, 1)
    np.testing.assert_array_equal(tc.binary_kernel((2, 3, 4, 5))(flat), tc.conv_kernel(w))
    dw = np.arange(6 * 9, dtype=np.float32).reshape(6, 1, 3, 3)  # C=3, multiplier 2
    k = tc.depthwise_kernel(2)(dw)
    assert k.shape == (3, 3, 3, 2) and k[0, 1, 2, 1] == dw[2 * 2 + 1, 0, 0, 1]
    assert tc.compose(tc.per_channel, tc.negate)(np.ones((1, 2, 1, 1))).tolist() == [-1, -1]


def tiny_keras_model():
    """The Keras twin of make_torch_fixtures.TinyNet (NHWC)."""
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="bn1")(x)
    x = LearnableBias(name="move")(x)
    y = QuantConv2D(8, 3, padding="same", use_bias=False, input_quantizer="ste_sign",
                    kernel_quantizer="magnitude_aware_sign", name="binary_conv")(x)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name="bn2")(y)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(keras.layers.Add()([y, x]))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x), name="tiny")


def tiny_mapping(model):
    layer = model.get_layer
    return tc.TorchMapping({
        **tc.conv_targets("conv1", layer("conv1")),
        **tc.batch_norm_targets("bn1", layer("bn1")),
        "move.bias": (layer("move").bias, tc.learnable_bias),
        "binary_conv.weight": (layer("binary_conv").kernel, tc.binary_kernel((8, 8, 3, 3))),
        **tc.batch_norm_targets("bn2", layer("bn2")),
        "prelu.weight": (layer("prelu").alpha, lambda w: w.reshape(1, 1, -1)),
        **tc.conv_targets("depthwise", layer("depthwise"), tc.depthwise_kernel(2)),
        **tc.dense_targets("fc", layer("fc")),
    })


def test_tiny_model_matches_torch_output():
    model = tiny_keras_model()
    report = tc.load_torch_checkpoint(model, FIXTURES / "tiny_model.pth.tar", tiny_mapping)
    assert not report.unused and not report.unfilled and not report.missing
    data = expected("tiny_model")
    out = model.predict(data["input_nhwc"], verbose=0)
    np.testing.assert_allclose(out, data["output"], rtol=1e-4, atol=1e-4)


def test_strict_errors_list_missing_unused_and_unfilled():
    model = tiny_keras_model()
    mapping = tiny_mapping(model)
    targets = dict(mapping.targets)
    del targets["fc.bias"]
    targets["extra.weight"] = (model.get_layer("fc").bias, tc.identity)
    with pytest.raises(ValueError) as info:
        tc.load_torch_checkpoint(model, FIXTURES / "tiny_model.pth.tar", tc.TorchMapping(targets))
    message = str(info.value)
    assert "missing in the checkpoint (1): ['extra.weight']" in message
    assert "unused checkpoint tensors (1): ['fc.bias']" in message
    # fc.bias's variable is targeted by 'extra.weight', so nothing is unfilled here; drop it:
    del targets["extra.weight"]
    with pytest.raises(ValueError, match=r"model weights not filled \(1\): \['fc/bias'\]"):
        tc.load_torch_checkpoint(model, FIXTURES / "tiny_model.pth.tar", tc.TorchMapping(targets))
    # Known-unused tensors may be listed; non-strict loading reports instead of failing.
    report = tc.load_torch_checkpoint(model, FIXTURES / "tiny_model.pth.tar",
                                      tc.TorchMapping(targets, unused=("fc.bias",)), strict=False)
    assert report.unfilled == ("fc/bias",) and not report.unused


def test_shape_mismatch_names_key_and_shapes():
    model = tiny_keras_model()
    targets = dict(tiny_mapping(model).targets)
    targets["fc.weight"] = (model.get_layer("fc").kernel, tc.identity)  # forgot the transpose
    before = model.get_layer("conv1").kernel.numpy().copy()
    with pytest.raises(ValueError, match=r"shape mismatch for 'fc.weight': checkpoint \(4, 16\) "
                                         r"vs variable fc/kernel \(16, 4\)"):
        tc.load_torch_checkpoint(model, FIXTURES / "tiny_model.pth.tar", tc.TorchMapping(targets))
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)  # untouched


def test_mapping_registry():
    tc.register_torch_mapping("tiny_test_arch", tiny_mapping, overwrite=True)
    assert tc.get_torch_mapping("tiny_test_arch") is tiny_mapping
    with pytest.raises(ValueError, match="No PyTorch checkpoint mapping.*'nope'"):
        tc.get_torch_mapping("nope")
