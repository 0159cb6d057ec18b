"""Reusable blocks from the BNN literature, built from kbnn layers and quantizers.

Each block is a Keras layer (channels-last) that creates its sub-layers in `build()`, saves to
`.keras`, lists its binary convolutions in `binary_layers` and converts to one LCE `LceBconv2d`
per binary convolution. Each takes its quantizers as `input_quantizer` and `kernel_quantizer`
(the method's own by default; None for a float block) and declares in `batch_norm_pairs()` the
BatchNormalizations that the converter may fold into a binary convolution. See docs/methods.md.
"""

from kbnn.blocks.adabin import AdaBinBlock
from kbnn.blocks.bireal import BiRealBlock
from kbnn.blocks.bnext import BNextBlock
from kbnn.blocks.reactnet import ReActNetBlock
from kbnn.blocks.shortcut import AvgPoolShortcut
from kbnn.blocks.xnor import XnorBlock

__all__ = ["AdaBinBlock", "AvgPoolShortcut", "BNextBlock", "BiRealBlock", "ReActNetBlock",
           "XnorBlock"]

from kbnn.blocks.bimlp import BiMLPBlock, BiMLPDownsample

__all__ += ["BiMLPBlock", "BiMLPDownsample"]
