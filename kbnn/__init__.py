"""kbnn: binary neural networks for Keras 3, with conversion to Larq Compute Engine.

Sub-packages: `kbnn.quantizers`, `kbnn.layers`, `kbnn.constraints`, `kbnn.blocks`,
`kbnn.training`, `kbnn.zoo`, `kbnn.converters`; `kbnn.summary` / `kbnn.profile` count
parameters by precision, binary and float MACs.
"""

from kbnn import activations, blocks, constraints, layers, metrics, optimizers, quantizers, training
from kbnn.summary import ModelProfile, profile, summary

__version__ = "0.1.0"

__all__ = ["__version__", "blocks", "constraints", "layers", "quantizers", "training"]
__all__ += ["ModelProfile", "profile", "summary"]
__all__ += ["activations", "metrics", "optimizers"]


def __getattr__(name: str):
    """`kbnn.converters` and `kbnn.zoo` load on first use (the converter imports LCE)."""
    if name in ("converters", "zoo"):
        import importlib

        return importlib.import_module(f"kbnn.{name}")
    raise AttributeError(f"module 'kbnn' has no attribute {name!r}")
