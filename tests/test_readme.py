"""The README's code runs as written (one epoch instead of ten, to stay fast)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_binary_convnet.py"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_example_is_the_example_script():
    script = EXAMPLE.read_text()
    assert _blocks()[0].strip() in script


def test_readme_code_runs_train_convert_verify(capsys):
    train, convert = _blocks()[:2]
    assert "epochs=10" in train
    namespace: dict = {}
    exec(train.replace("epochs=10", "epochs=1"), namespace)  # noqa: S102 (our own README)
    exec(convert, namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "BOPs" in printed and "LceBconv2d" in printed and "top-1 agreement" in printed
    # The binary conv of the example lowered: exactly one LceBconv2d in the flatbuffer.
    report = namespace["kbnn"].converters.inspect(namespace["flatbuffer"])
    assert report.count("LceBconv2d") == 1
    assert np.isfinite(namespace["model"].predict(namespace["x"][:4], verbose=0)).all()
