"""kbnn.converters: export kbnn models to TFLite flatbuffers with LCE bitpacked ops.

* `convert(model, target="arm", int8=False, strict=True, ...) -> bytes`: Keras 3 `model.export`
  + `larq_compute_engine.convert_saved_model`, with every kbnn layer in its export form
  (binary layers become `LceBconv2d`, the affine forms folded into its multiplier/bias).
* `inspect(flatbuffer) -> ModelReport`: operators, binary convs, float tensors, sizes.
* `verify(model, flatbuffer, inputs) -> VerifyReport`: LCE interpreter vs Keras.
* `ConversionError`: a layer (or model) that cannot be converted as asked.

What lowers (LCE 0.16; the LCE patterns behind it are described in docs/lce.md): binary
`QuantConv2D` (any stride/dilation; padding valid, same with pad_values 1 (same-one) or 0 (LCE
same-zero on arm for a plain sign, else a constant border map); groups with a multiple of 32
input channels per group), `QuantConv1D` (a height-1 2-D conv; causal padding pads x - t before
the sign), `QuantDense` (reshape to [N, M, 1, C] before the sign, 1x1 conv). Binary
depthwise/separable convs, grouped convs with other group sizes and channels_first are refused
in strict mode (with strict=False they stay float ops and are listed in
`ConversionResult.warnings`). Binary layers export in float32 under any dtype policy (e.g.
mixed_float16: casts around the layer) and need static input shapes (but the batch size); a
flatbuffer with a custom op that is not an LCE op (it could not run) is refused in strict mode.

Affine forms (see `binary_conv`): input ``a*s(x - t) + b`` with scalar `a`, per-channel `t` and
`b`; kernel ``scale_o*S + offset_o``. Exactly one LceBconv2d per layer; a kernel offset adds the
window sum of the binary input as float ops on one channel (SUM over input channels, PADV2,
AVERAGE_POOL_2D, or one float CONV_2D for dilated/grouped convs) times a per-output-channel MUL,
joined by one ADD; zero padding of an affine input adds one ADD_N (border map); `a`, `scale`,
`b*sum(W)`, bias and a following BatchNormalization fold into the bconv's multiplier/bias. A
per-input-channel `a` is refused. A BatchNormalization directly (and only) after a layer with
correction terms folds in kbnn (`bn_fold`: every term scaled per channel, the shift in the bias);
LCE folds one after a plain bconv itself.
"""

from .convert import ConversionResult, convert, export_mode
from .errors import ConversionError
from .inspection import ModelReport, inspect
from .verify import VerifyReport, run_flatbuffer, verify

__all__ = [
    "ConversionError",
    "ConversionResult",
    "ModelReport",
    "VerifyReport",
    "convert",
    "export_mode",
    "inspect",
    "run_flatbuffer",
    "verify",
]
