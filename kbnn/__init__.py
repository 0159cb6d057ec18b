"""kbnn: binary neural networks for Keras 3, with conversion to Larq Compute Engine.

Sub-packages: `kbnn.quantizers`, `kbnn.layers`, `kbnn.constraints`, `kbnn.blocks`,
`kbnn.training`, `kbnn.zoo`, `kbnn.converters`; `kbnn.summary` / `kbnn.profile` count
parameters by precision, binary and float MACs.
"""

from kbnn import constraints, layers, quantizers
from kbnn.summary import ModelProfile, profile, summary

__version__ = "0.1.0"

__all__ = ["constraints", "layers", "quantizers", "__version__"]
__all__ += ["ModelProfile", "profile", "summary"]
