"""The official BNext checkpoint layout (hpi-xnor/BNext, src/bnext.py module names) loaded into
`kbnn.zoo.BNextTiny` through the registered mapping: a `torch.save` file of BNext-T at 1/32 of
the published width (annealed: every temperature below 1e-7; DataParallel keys, as the
releases), whose logits a PyTorch reference computed (tests/zoo/make_torch_fixtures.py), must
come out of the Keras model, and out of its strict LCE conversion."""

import numpy as np
import pytest
from torch_fixture_helpers import assert_converts_and_verifies, torch_fixtures

from kbnn import zoo
from kbnn.zoo import torch_checkpoint as tc
from kbnn.zoo import weights as zw
from kbnn.zoo.bnext_torch import bnext_mapping

NAME = "bnext_tiny_w1_32"

checkpoint, reference, build = torch_fixtures(NAME, zoo.BNextTiny)


def test_checkpoint_layout(checkpoint):
    state = tc.read_torch_checkpoint(checkpoint)
    assert state["feature.2.Attention.binary_conv.weight"].shape == (2, 2, 3, 3)
    assert "feature.1.FFN_1.se.se.1.weight" in state and "feature.3.FFN.scale" in state
    assert float(state["feature.5.FFN.binary_conv.temperature"][0]) < 1e-7
    assert "feature.0.prelu.weight" in state  # the unused stem PReLU


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model = build(classifier_activation=None)
    report = tc.load_torch_checkpoint(model, checkpoint, bnext_mapping)
    assert not report.unfilled and not report.unused and not report.missing
    return model


def test_logits_match_torch(loaded, reference):
    images, logits = reference
    ours = loaded.predict(images, verbose=0)
    rel = np.abs(ours - logits).max() / np.abs(logits).max()
    assert rel < 1e-4, rel
    assert (ours.argmax(-1) == logits.argmax(-1)).all()
    assert len(set(logits.argmax(-1).tolist())) > 1  # the top-1 check is not vacuous


def test_every_tau_comes_from_the_checkpoint(loaded):
    taus = [v for v in loaded.weights if v.path.endswith("/tau")]
    assert len(taus) == 31 and all(float(np.asarray(t)) < 1e-7 for t in taus)


def test_converts_strictly_and_verifies(loaded, reference):
    assert_converts_and_verifies(loaded, reference[0], strict=True)


def test_weights_argument_and_registry_use_the_mapping(checkpoint, reference):
    images, logits = reference
    model = build(classifier_activation=None, weights=str(checkpoint))
    np.testing.assert_allclose(model.predict(images, verbose=0), logits,
                               rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    features = build(include_top=False, pooling="avg")
    zw.load_weights(features, checkpoint, architecture="BNextTiny")
    state = tc.read_torch_checkpoint(checkpoint)
    out = features.predict(images, verbose=0) @ state["fc.weight"].T + state["fc.bias"]
    np.testing.assert_allclose(out, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


def test_other_kernel_quantizer_is_refused_with_a_reason(checkpoint):
    model = build(kernel_quantizer="ste_sign")
    with pytest.raises(ValueError, match="kernel_quantizer='bnext_weight'"):
        tc.load_torch_checkpoint(model, checkpoint, bnext_mapping)
