"""Make `blocks_helpers` (tests/blocks) and `torch_fixture_helpers` (this folder) importable
from the zoo tests under ``--import-mode=importlib``, which does not put test folders on
sys.path."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "blocks"))
sys.path.insert(0, str(HERE))
