"""The flatbuffers of a fixed set of models keep the operator lists (op names and input tensor
shapes, in execution order) that the converter gave before the layer export contract was made
public; the reference lists were written by `make_oplist_baseline.py` with that converter."""

import json
import pathlib
import sys
import warnings

import keras
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "blocks"))
from blocks_helpers import flatbuffer_ops
from kbnn.converters import convert
from oplist_models import MODELS

BASELINE = json.loads((pathlib.Path(__file__).parent / "data" / "oplists_baseline.json").read_text())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_operator_list_is_unchanged(name):
    build, kwargs = MODELS[name]
    keras.utils.set_random_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8_stem_head keeps its float head (a warning)
        flatbuffer = convert(build(), **kwargs)
    ops = [[op, [list(s) for s in shapes]] for op, shapes in flatbuffer_ops(flatbuffer)]
    assert ops == BASELINE[name]

