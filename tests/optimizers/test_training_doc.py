"""docs/training.md's example (Bop + Adam through CaseOptimizer on digits, FlipRatio, a gamma
schedule, saving) runs as written."""

import re
from pathlib import Path

import keras
import pytest

from kbnn.optimizers import CaseOptimizer

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_training_doc_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own docs)
    out = capsys.readouterr().out
    assert "flip ratio per epoch" in out
    assert namespace["accuracy"] > 0.85
    assert namespace["history"].history["gamma"] == pytest.approx(
        [1e-3 * 0.5 ** e for e in range(6)], rel=1e-6)
    restored = namespace["restored"]
    assert isinstance(restored, keras.Model)
    assert isinstance(restored.optimizer, CaseOptimizer)
    assert (tmp_path / "digits_bop.keras").exists()
