"""Write `data/oplists_baseline.json`: the operator list of every model in `oplist_models`.

Run from the repository root with the converter whose output is the reference:
    .venv/bin/python tests/converters/make_oplist_baseline.py
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "blocks"), str(HERE.parent)]

import keras
from blocks_helpers import flatbuffer_ops
from oplist_models import MODELS

from kbnn.converters import convert


def main() -> None:
    baseline = {}
    for name, (build, kwargs) in MODELS.items():
        keras.utils.set_random_seed(7)
        model = build()
        baseline[name] = [[op, [list(s) for s in shapes]]
                          for op, shapes in flatbuffer_ops(convert(model, **kwargs))]
        print(name, len(baseline[name]), "ops")
    (HERE / "data" / "oplists_baseline.json").write_text(json.dumps(baseline, indent=1) + "\n")


if __name__ == "__main__":
    main()
