"""Zero padding (same-zero) of a plain sign on maps smaller than the kernel window: LCE 0.16's
optimised bconv kernel gets these wrong, so the converter pads with +1 and subtracts the border
map there; the flatbuffer agrees with Keras on every map size."""

import keras
import numpy as np
import pytest
from convert_helpers import bconv_count
from kbnn.converters import convert, inspect, verify

from kbnn.layers import QuantConv2D


@pytest.mark.parametrize("size, dilation", [(1, 1), (2, 1), (3, 1), (4, 1), (4, 2), (5, 2)])
def test_same_zero_agrees_on_every_map_size(size, dilation):
    keras.utils.set_random_seed(size)
    inputs = keras.Input((size, size, 32))
    layer = QuantConv2D(32, 3, padding="same", pad_values=0.0, dilation_rate=dilation,
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    model = keras.Model(inputs, layer(inputs))
    flatbuffer = convert(model, strict=True)
    assert bconv_count(flatbuffer) == 1
    window = dilation * 2 + 1
    # Native same-zero only where the window fits; otherwise a border map (ADD_N).
    assert inspect(flatbuffer).count("ADD_N") == (0 if size >= window else 1)
    x = np.random.default_rng(0).normal(size=(6, size, size, 32)).astype("float32")
    # Reference: sign(x) zero-padded, convolved with sign(W), in numpy.
    sx = np.pad(np.where(x < 0, -1.0, 1.0), ((0, 0), (dilation,) * 2, (dilation,) * 2, (0, 0)))
    sw = np.where(np.asarray(layer.kernel) < 0, -1.0, 1.0)
    ref = sum(np.einsum("nhwc,co->nhwo",
                        sx[:, i * dilation:i * dilation + size, j * dilation:j * dilation + size],
                        sw[i, j]) for i in range(3) for j in range(3))
    np.testing.assert_allclose(np.asarray(model(x)), ref, atol=1e-4)
    report = verify(model, flatbuffer, x, atol=1e-3, rtol=1e-5)
    assert report.within_tolerance == 1.0, report.table()
