"""docs/training.md's distillation examples (a binary student distilled from a float teacher on
digits, saved and converted; the same with a feature loss over named layers) run as written."""

import textwrap
from pathlib import Path

import keras
import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
START = "A binary student distilled from a small float teacher on digits"


def indented_block_after(text: str, marker: str) -> str:
    lines = text[text.index(marker):].splitlines()[1:]
    while lines and not lines[0].strip():
        lines.pop(0)
    block = []
    for line in lines:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_distillation_example_runs(tmp_path, monkeypatch):
    code = indented_block_after(DOC.read_text(), START)
    assert "Distiller(student, teacher)" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own docs)
    split, student = namespace["split"], namespace["student"]
    accuracy = np.mean(np.argmax(student.predict(split.x_test, verbose=0), -1) == split.y_test)
    assert accuracy > 0.8
    assert isinstance(keras.models.load_model(tmp_path / "student.keras"), keras.Model)
    assert isinstance(namespace["flatbuffer"], bytes)


def test_feature_loss_example_runs(tmp_path, monkeypatch):
    code = indented_block_after(DOC.read_text(), "so `teacher_layers` is left out):")
    assert "feature_losses=[rbd]" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own docs)
    split, student = namespace["split"], namespace["student"]
    history = namespace["history"].history
    assert "representation_distillation" in history
    assert history["representation_distillation"][-1] < history["representation_distillation"][0]
    accuracy = np.mean(np.argmax(student.predict(split.x_test, verbose=0), -1) == split.y_test)
    assert accuracy > 0.8
    assert isinstance(namespace["flatbuffer"], bytes)
