"""kbnn: binary neural networks for Keras 3, with conversion to Larq Compute Engine.

Sub-packages: `kbnn.quantizers`, `kbnn.layers`, `kbnn.constraints`, `kbnn.blocks`,
`kbnn.training`, `kbnn.zoo`, `kbnn.converters`; `kbnn.summary` / `kbnn.profile` count
parameters by precision, binary and float MACs.
"""

from kbnn import constraints, layers, quantizers

__version__ = "0.1.0"

__all__ = ["constraints", "layers", "quantizers", "__version__"]
