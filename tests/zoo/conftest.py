"""Make `blocks_helpers` (tests/blocks) importable from the zoo tests under
``--import-mode=importlib``, which does not put test folders on sys.path."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "blocks"))
