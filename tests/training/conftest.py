"""Make `training_helpers` (shared by these test modules and the scripts they run)
importable under ``--import-mode=importlib``, which does not put test folders on sys.path."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
