"""A plain (non-editable) install of a built wheel gives kbnn, kbnn.zoo and kbnn.converters."""

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
                     "kbnn/quantizers/__init__.py", "kbnn/layers/__init__.py", "kbnn/cli.py"):
        assert required in names, f"{required} missing from the wheel"
    assert not any(n.startswith(("zoo/", "converters/", "tests/")) for n in names)

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
