"""kbnn.zoo: binary-network architectures with the keras.applications signature.

Builders (docs/zoo.md has the figures, the layer-naming scheme and the weights):

* `QuickNetSmall`, `QuickNet`, `QuickNetLarge`: larq-zoo's QuickNet family (Bannink et al.,
  arXiv 2011.09398), parameter for parameter;
* `ReActNetA` and `ReActNetResNet18`: ReActNet (arXiv 2003.03488), MobileNet-derived and on the
  Bi-Real-18 base; `RepReActNetA`: ReActNet-A with RepBNN's channel replication
  (arXiv 2207.09049);
* `BiRealNet18`, `BiRealNet34`: Bi-Real Net (arXiv 1808.00278);
* `XnorResNet18`: XNOR-Net's ResNet-18 (arXiv 1603.05279);
* `AdaBinResNet18`: AdaBin (arXiv 2208.08084);
* `BNextTiny`, `BNextSmall`, `BNextMiddle`, `BNextLarge`: BNext-T/S/M/L (arXiv 2211.12933).

Each takes ``include_top=True, weights=None, input_tensor=None, input_shape=None,
pooling=None, classes=1000, classifier_activation="softmax", name=None`` plus keyword-only
options: `width_multiplier` (narrow variants), `pad_values`, and the binarizers
(`input_quantizer`, `kernel_quantizer`, ...). `list_models()` names them; `get(name, **kwargs)`
builds one by name.

The weights API (docs/weights.md) is reachable from here too, loaded on first use:
`load_weights`, `list_weights`, `register_weights` (`kbnn.zoo.weights`),
`load_larq_zoo_weights` (`kbnn.zoo.larq_weights`), `load_torch_checkpoint`
(`kbnn.zoo.torch_checkpoint`).
"""

from __future__ import annotations

from .adabin import AdaBinResNet18
from .bireal import BiRealNet18, BiRealNet34
from .bnext import BNextLarge, BNextMiddle, BNextSmall, BNextTiny
from .quicknet import BlurPoolInitializer, QuickNet, QuickNetLarge, QuickNetSmall
from .reactnet import ReActNetA, ReActNetResNet18, RepReActNetA
from .xnor import XnorResNet18

__all__ = [
    "AdaBinResNet18",
    "BNextLarge",
    "BNextMiddle",
    "BNextSmall",
    "BNextTiny",
    "BiRealNet18",
    "BiRealNet34",
    "BlurPoolInitializer",
    "QuickNet",
    "QuickNetLarge",
    "QuickNetSmall",
    "ReActNetA",
    "ReActNetResNet18",
    "RepReActNetA",
    "XnorResNet18",
    "get",
    "list_models",
]

# name -> module: the weights API, imported on first use (it reads HDF5 and checkpoints).
_LAZY = {"load_weights": "weights", "list_weights": "weights", "register_weights": "weights",
         "load_larq_zoo_weights": "larq_weights", "load_torch_checkpoint": "torch_checkpoint"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_BUILDERS = {
    builder.__name__: builder
    for builder in (QuickNetSmall, QuickNet, QuickNetLarge, ReActNetA, RepReActNetA,
                    ReActNetResNet18,
                    BiRealNet18, BiRealNet34, XnorResNet18, AdaBinResNet18,
                    BNextTiny, BNextSmall, BNextMiddle, BNextLarge)
}


def list_models() -> list[str]:
    """The names of the zoo's architectures, in the order of docs/zoo.md."""
    return list(_BUILDERS)


def get(name: str, /, **kwargs):
    """Build the architecture called `name` (see `list_models()`; the match ignores case,
    "-" and "_") with the builder's keyword arguments, e.g.
    ``kbnn.zoo.get("BiRealNet18", input_shape=(32, 32, 3), include_top=False)``. `name` is
    positional-only, so ``name=`` among the keyword arguments names the model:
    ``kbnn.zoo.get("XnorResNet18", name="my_xnor")``."""
    if isinstance(name, str):
        key = name.replace("-", "").replace("_", "").lower()
        for candidate, builder in _BUILDERS.items():
            if candidate.lower() == key:
                if kwargs.get("weights") == "digits":  # the options the digits weights need
                    from .digits import digits_options

                    kwargs = digits_options(candidate, kwargs)
                return builder(**kwargs)
    raise ValueError(
        f"Invalid value for argument `name` of kbnn.zoo.get. Expected one of "
        f"{', '.join(_BUILDERS)}. Received name={name!r}.")
