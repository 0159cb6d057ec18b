"""docs/export.md's example (a binary layer defined outside kbnn) runs as written and converts
strictly to one LceBconv2d that agrees with the Keras layer."""

import re
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def test_export_doc_example_converts_strictly(capsys):
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own docs)
    assert "1 LceBconv2d" in capsys.readouterr().out
    model, flatbuffer, x = namespace["model"], namespace["flatbuffer"], namespace["x"]
    # Independent reference of the layer: sign(x) convolved with mean|W| * sign(W), 3x3 VALID.
    layer = model.layers[-1]
    w = np.asarray(layer.kernel, np.float64)
    wq = np.abs(w).mean(axis=(0, 1, 2)) * np.where(w >= 0, 1.0, -1.0)
    sx = np.where(x >= 0, 1.0, -1.0)
    ref = sum(np.einsum("nhwc,co->nhwo", sx[:, i:i + 6, j:j + 6], wq[i, j])
              for i in range(3) for j in range(3))
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    got = Interpreter(flatbuffer).predict(x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
