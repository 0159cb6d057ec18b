"""Shared by the tests/zoo/test_torch_*.py modules: the torch-written checkpoint fixtures
(tests/zoo/make_torch_fixtures.py) unpacked, their reference logits, and the checks that a
Keras model reproduces those logits and converts to a flatbuffer with the same outputs."""

import gzip
import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def unpack_checkpoint(tmp_path_factory, name: str) -> pathlib.Path:
    """fixtures/<name>.pth.tar.gz, gunzipped into a fresh temporary folder."""
    path = tmp_path_factory.mktemp(name) / f"{name}.pth.tar"
    path.write_bytes(gzip.decompress((FIXTURES / f"{name}.pth.tar.gz").read_bytes()))
    return path


def load_reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The NHWC float32 inputs and the logits torch computed on them (fixtures/<name>.npz)."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return data["input_nhwc"].astype(np.float32), data["logits"]


def torch_fixtures(name: str, builder, **defaults):
    """The module-scoped pytest fixtures `checkpoint` (the path of the unpacked checkpoint) and
    `reference` ((inputs, logits)) of fixtures/<name>, and ``build(**kwargs)``: the kbnn.zoo
    `builder` at the fixture's size (32x32x3 inputs, 10 classes, 1/32 of the published width)
    with `defaults`, which `kwargs` override. A test module assigns the three:
    ``checkpoint, reference, build = torch_fixtures(NAME, zoo.Builder)``."""

    @pytest.fixture(scope="module")
    def checkpoint(tmp_path_factory):
        return unpack_checkpoint(tmp_path_factory, name)

    @pytest.fixture(scope="module")
    def reference():
        return load_reference(name)

    def build(**kwargs):
        return builder(input_shape=(32, 32, 3), classes=10, width_multiplier=1 / 32,
                       **{**defaults, **kwargs})

    return checkpoint, reference, build


def assert_logits_match(outputs: np.ndarray, logits: np.ndarray) -> None:
    """Within 1e-4 (absolute and relative to the largest logit), with the same top-1."""
    np.testing.assert_allclose(outputs, logits, rtol=1e-4, atol=1e-4)
    relative = np.abs(outputs - logits).max() / np.abs(logits).max()
    assert relative < 1e-4, relative
    np.testing.assert_array_equal(outputs.argmax(-1), logits.argmax(-1))


def assert_converts_and_verifies(model, images: np.ndarray, strict: bool = True) -> None:
    """The LCE flatbuffer of `model` gives its outputs on `images`, with the same top-1."""
    from kbnn.converters import convert, verify

    report = verify(model, convert(model, strict=strict), images, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0 and report.top1_agreement == 1.0, report


def assert_matches_torch_and_converts(model, reference, strict: bool = True) -> None:
    """`model` gives torch's logits on the reference inputs (`assert_logits_match`), and so does
    its strict LCE flatbuffer (`assert_converts_and_verifies`)."""
    images, logits = reference
    assert_logits_match(model.predict(images, verbose=0), logits)
    assert_converts_and_verifies(model, images, strict=strict)


def assert_every_tensor_is_used(report) -> None:
    """A `load_torch_checkpoint` report that filled every variable from every tensor, with the
    downsampling shortcut of stage 2 among the tensors loaded."""
    assert not report.unused and not report.unfilled and not report.missing
    assert "layer2.0.downsample.1.weight" in report.loaded
