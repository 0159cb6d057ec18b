"""Quantizers: training form (surrogate gradient) and inference form (affine-binary).

Every quantizer is a Keras layer resolvable by a string alias through `get`; binarizers expose
`binary_form(x)`: ``scale * s(x - threshold) + offset``, the only thing the converter reads.

Methods and papers: BinaryNet STE (arXiv 1602.02830), XNOR-Net (arXiv 1603.05279), Bi-Real Net
(arXiv 1808.00278), ReActNet (arXiv 2003.03488), IR-Net (arXiv 1909.10788), AdaBin
(arXiv 2208.08084), BNext (arXiv 2211.12933), ReBNN (arXiv 2302.00956), RBONN
(arXiv 2209.01542), ReCU (arXiv 2103.12369), DoReFa-Net (arXiv 1606.06160), Ternary Weight
Networks (arXiv 1605.04711), BNN+ (arXiv 1812.11800) and int8 fake quantization
(arXiv 1712.05877). Formulas, gradients and reference values: docs/methods.md.
"""

from kbnn.quantizers.adabin import AdaBinActivation, AdaBinWeight
from kbnn.quantizers.base import BinaryForm, Quantizer, binary_sign, sign_with_surrogate_grad
from kbnn.quantizers.bnext import BNextWeight, HardSign, bnext_weight, hard_sign
from kbnn.quantizers.dorefa import DoReFa
from kbnn.quantizers.fake_quant import FakeQuant
from kbnn.quantizers.irnet import EDEQuantizer, EDESign, LibraSign, ede_grad, ede_sign
from kbnn.quantizers.noop import NoOp
from kbnn.quantizers.rbonn import RBONNWeight
from kbnn.quantizers.reactnet import RSign, ScaledSign
from kbnn.quantizers.rebnn import LearnedScaleWeight, ReBNNWeight
from kbnn.quantizers.recu import ReCUSign, ReCUWeight
from kbnn.quantizers.registry import (
    deserialize,
    get,
    known_aliases,
    register_alias,
    serialize,
    serialize_recipe,
)
from kbnn.quantizers.sign import (
    ApproxSign,
    MagnitudeAwareSign,
    SteHeaviside,
    SteSign,
    SwishSign,
    approx_sign,
    approx_sign_grad,
    magnitude_aware_sign,
    ste_heaviside,
    ste_sign,
    swish_sign,
)
from kbnn.quantizers.ternary import SteTern, ste_tern
from kbnn.quantizers.xnor import XnorWeight, xnor_activation_scale

__all__ = [
    "AdaBinActivation",
    "AdaBinWeight",
    "ApproxSign",
    "BNextWeight",
    "BinaryForm",
    "DoReFa",
    "EDEQuantizer",
    "EDESign",
    "FakeQuant",
    "HardSign",
    "LearnedScaleWeight",
    "LibraSign",
    "MagnitudeAwareSign",
    "NoOp",
    "Quantizer",
    "RBONNWeight",
    "RSign",
    "ReBNNWeight",
    "ReCUSign",
    "ReCUWeight",
    "ScaledSign",
    "SteHeaviside",
    "SteSign",
    "SteTern",
    "SwishSign",
    "XnorWeight",
    "approx_sign",
    "approx_sign_grad",
    "binary_sign",
    "bnext_weight",
    "deserialize",
    "ede_grad",
    "ede_sign",
    "get",
    "hard_sign",
    "known_aliases",
    "magnitude_aware_sign",
    "register_alias",
    "serialize",
    "serialize_recipe",
    "sign_with_surrogate_grad",
    "ste_heaviside",
    "ste_sign",
    "ste_tern",
    "swish_sign",
    "xnor_activation_scale",
]

# Methods II: FDA (arXiv 2103.00841), DIR-Net (arXiv 2109.12338), binarizing by classification
# (arXiv 2205.07433).
from kbnn.quantizers.dirnet import DTESign, IMBWeight, dte_grad, dte_sign
from kbnn.quantizers.fda import FDASign, fda_grad, fda_sign
from kbnn.quantizers.learned import LearnedBinarizer, is_learned_binarizer_variable

__all__ += ["DTESign", "FDASign", "IMBWeight", "LearnedBinarizer", "dte_grad", "dte_sign",
            "fda_grad", "fda_sign", "is_learned_binarizer_variable"]
