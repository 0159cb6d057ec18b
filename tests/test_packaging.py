"""A plain (non-editable) install of a built wheel gives kbnn, kbnn.zoo, kbnn.converters and the
applications package kbnn_apps (the `kbnn` command)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_all_packages_and_imports(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("kbnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("kbnn/__init__.py", "kbnn/zoo/__init__.py", "kbnn/converters/__init__.py",
                     "kbnn/quantizers/__init__.py", "kbnn/layers/__init__.py",
                     "kbnn_apps/__init__.py", "kbnn_apps/__main__.py", "kbnn_apps/cli.py",
                     "kbnn_apps/demo.py", "kbnn_apps/bench.py"):
        assert required in names, f"{required} missing from the wheel"
    assert not any(n.startswith(("zoo/", "converters/", "apps/", "tests/")) for n in names)
    # the shipped digits weights (kbnn.zoo.digits, weights="digits")
    from kbnn.zoo.digits import DIGITS_MODELS

    for model in DIGITS_MODELS.values():
        assert f"kbnn/zoo/weights/{model.file_name}" in names
    # the larq-zoo weights registry is a data file
    assert "kbnn/zoo/weights/larq_zoo.json" in names
    # The applications left the library package.
    assert not {f"kbnn/{module}.py" for module in ("cli", "demo", "bench")} & names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "kbnn = kbnn_apps.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True,
    )
    # Run outside the repository so that only the installed copy can be imported.
    code = ("import kbnn, kbnn.zoo, kbnn.converters, kbnn.layers; "
            "print(kbnn.__file__); print(kbnn.zoo.__file__); print(kbnn.converters.__file__)")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in out), out

    # The installed command answers --version from the wheel's metadata without TensorFlow.
    code = ("import sys; from kbnn_apps.cli import main; status = main(['--version']); "
            "print(status, sorted(m for m in ('tensorflow', 'keras', 'kbnn') if m in sys.modules))")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True,
    ).stdout
    assert out.splitlines() == ["kbnn 0.1.0", "0 []"], out
