"""`kbnn demo`: the digits job end to end (short run) and its accuracy targets (slow)."""

import os

import keras
import numpy as np
import pytest
from larq_compute_engine.tflite.python.interpreter import Interpreter
from tensorflow.lite.python import schema_py_generated as schema

from kbnn.data import load_digits_split
from kbnn_apps.cli import main
from kbnn_apps.demo import run_demo

FILES = ("model.keras", "model.tflite", "report.md", "training.png")


def _op_names(flatbuffer: bytes) -> list[str]:
    """Operator names of subgraph 0, read with TensorFlow's flatbuffer schema."""
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        code = codes[graph.Operators(i).OpcodeIndex()]
        names.append(code.CustomCode().decode() if code.CustomCode() else str(code.BuiltinCode()))
    return names


def _independent_figures(out_dir):
    """Keras and LCE-interpreter predictions on the test split, computed here."""
    data = load_digits_split(test_size=0.2, val_size=0.1, seed=0)
    model = keras.models.load_model(os.path.join(out_dir, "model.keras"), compile=False)
    keras_pred = np.argmax(model.predict(data.x_test, verbose=0), -1)
    with open(os.path.join(out_dir, "model.tflite"), "rb") as f:
        flatbuffer = f.read()
    tflite_pred = np.argmax(Interpreter(flatbuffer).predict(data.x_test), -1)
    return {
        "keras_accuracy": float(np.mean(keras_pred == data.y_test)),
        "tflite_accuracy": float(np.mean(tflite_pred == data.y_test)),
        "agreement": float(np.mean(keras_pred == tflite_pred)),
        "flatbuffer": flatbuffer,
        "n_test": len(data.y_test),
    }


def test_demo_command_short_run(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "2", "--out", str(out), "--bench-runs", "5"]) == 0
    stdout = capsys.readouterr().out
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    for stage in range(1, 7):
        assert f"[{stage}/6]" in stdout
    assert "Epoch 2/2" in stdout  # the Keras progress bar ran
    # stdout is captured (not a terminal): one plain line per epoch, no ANSI escape codes
    assert "\x1b[" not in stdout and "\r" not in stdout
    assert "Training the binary network for 2 epochs" in stdout

    figures = _independent_figures(out)
    # Two binary convs and the binary dense (as a 1x1 conv) are LCE binary convolutions.
    assert _op_names(figures["flatbuffer"]).count("LceBconv2d") == 3
    assert figures["agreement"] >= 0.99

    report = (out / "report.md").read_text()
    assert f"{100 * figures['keras_accuracy']:.2f} %" in report
    assert f"{100 * figures['tflite_accuracy']:.2f} %" in report
    assert f"**{100 * figures['agreement']:.2f} %** on {figures['n_test']} test images" in report
    assert f"| binary (LCE) | {len(figures['flatbuffer']):,} |" in report
    assert "| LceBconv2d | 3 |" in report
    assert "float twin (TFLite)" in report and "x86" in report

    with open(out / "training.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_default_demo_reaches_the_targets(tmp_path):
    results = run_demo(out_dir=str(tmp_path), verbose=0, log=None, bench_runs=10)
    figures = _independent_figures(tmp_path)
    assert figures["keras_accuracy"] >= 0.95
    assert figures["agreement"] >= 0.99
    assert results["keras_accuracy"] == pytest.approx(figures["keras_accuracy"])
    assert results["top1_agreement"] == pytest.approx(figures["agreement"])
