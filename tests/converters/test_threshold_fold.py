"""Issue 4: RSign's learnt threshold folds into the preceding bconv's bias (LCE.md 1.5).

bconv -> BN -> RSign -> bconv: LCE turns `where(x >= t)` into `Quantize(x - t)` and folds the
SUB into the first bconv's bias, so the first bconv writes bitpacked INT32 output straight into
the second one: no float SUB and no LceQuantize in between.
"""

import keras
import numpy as np
from convert_helpers import bconv_count, random_inputs, randomize_state, seeded
from kbnn.converters import convert, inspect, verify

from kbnn.layers import QuantConv2D


def _model():
    seeded()
    inp = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, name="first",
                    input_quantizer="ste_sign", kernel_quantizer="scaled_sign")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, name="second",
                    input_quantizer="rsign", kernel_quantizer="scaled_sign")(x)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inp, x)
    randomize_state(model)  # thresholds and BN statistics away from their initial values
    return model


def test_rsign_threshold_folds_into_previous_bconv():
    model = _model()
    threshold = np.asarray(model.get_layer("second").input_quantizer.threshold)
    assert np.abs(threshold).min() > 0  # a real per-channel threshold, not the zero init
    flatbuffer = convert(model, strict=True)
    report = inspect(flatbuffer)
    assert bconv_count(flatbuffer) == 2
    # No float op between the two bconvs: the threshold lives in the first bconv's output
    # transform, which writes bitpacked int32 for the second bconv.
    assert report.count("SUB") == 0 and report.count("ADD") == 0
    assert report.count("LceQuantize") == 1  # only the model input is binarized by an op
    assert report.bconvs[0]["output_dtype"] == "INT32"
    rep = verify(model, flatbuffer, random_inputs((8, 8, 32), n=16))
    assert rep.max_rel_diff < 1e-4, rep.table()
