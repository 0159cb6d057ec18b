"""numpy references of BNext (arXiv 2211.12933; docs/methods.md, section 'BNext'), shared by
tests/quantizers/test_bnext.py, tests/layers/test_bnext_units.py and
tests/blocks/test_bnext_block.py.

Written from the method's description, in float64, independent of kbnn's code: only the layers'
variables are read (by attribute). The straight-through gradients are checked by central finite
differences of these references with the official "detach" trick written out:

* HardSign: forward sign(u), backward d clamp(u, -1.5, 1.5): the reference evaluates
  ``sign(u0) - clamp(u0) + clamp(u)`` around the operating point u0;
* BNext weights: forward W_b(W), backward the identity: ``W_b(W0) - W0 + W``.

So the finite-difference gradient at u0 / W0 is exactly the STE gradient.
"""

from __future__ import annotations

import numpy as np

BINARY_BELOW = np.float32(1e-7)


def f64(variable) -> np.ndarray:
    return np.asarray(variable, np.float64)


def sign(x):
    """sign with sign(0) = +1."""
    return np.where(x >= 0, 1.0, -1.0)


def bnext_weight(w, tau):
    """sign(W) once tau < 1e-7 (compared in float32), else clamp(W / max(tau, 1e-8), -1, 1)."""
    if np.float32(tau) < BINARY_BELOW:
        return sign(w)
    return np.clip(w / max(float(np.float32(tau)), 1e-8), -1.0, 1.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def hard_sigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def prelu(x, alpha):
    return np.where(x >= 0, x, alpha.reshape(-1) * x)


def same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding: out = ceil(size / stride), the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def conv2d_same(x, w, stride: int = 1, pad_value: float = 0.0):
    """NHWC x (N, H, W, Cin), kernel (kh, kw, Cin, Cout), SAME padding with `pad_value`."""
    n, h, wd, _ = x.shape
    kh, kw, _, cout = w.shape
    (pt, pb), (pl, pr) = same_pads(h, kh, stride), same_pads(wd, kw, stride)
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=pad_value)
    ho, wo = -(-h // stride), -(-wd // stride)
    out = np.zeros((n, ho, wo, cout))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def avgpool2_same(x):
    """2x2 stride-2 average pool, SAME padding, averaging the pixels inside the image."""
    n, h, w, c = x.shape
    ho, wo = -(-h // 2), -(-w // 2)
    out = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j, :] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2, :].mean(axis=(1, 2))
    return out


def batch_norm(x, layer, epsilon: float = 1e-5):
    """Inference batch norm with the layer's variables."""
    g, b, m, v = (f64(w) for w in (layer.gamma, layer.beta, layer.moving_mean,
                                   layer.moving_variance))
    return (x - m) / np.sqrt(v + epsilon) * g + b


def squeeze_expand(se, x):
    """GAP -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> gate; the convs'
    own kernels (no fake quantization: the float SE)."""
    pooled = x.mean(axis=(1, 2))
    k1, b1 = f64(se.conv1.kernel)[0, 0], f64(se.conv1.bias)
    k2, b2 = f64(se.conv2.kernel)[0, 0], f64(se.conv2.bias)
    z = np.maximum(pooled @ k1 + b1, 0.0) @ k2 + b2
    gate = sigmoid(z) if se.gate == "sigmoid" else hard_sigmoid(z)
    return gate[:, None, None, :]


def info_recoupling(layer, x_in, x):
    """mix = s x_in + (1 - s) x; out = SE(mix) * x."""
    s = f64(layer.scale)
    return squeeze_expand(layer.se, s * x_in + (1.0 - s) * x) * x


def unit(layer, x, *, x_sign=None, w=None, sign_at=None, weight_at=None):
    """ELM-Attention / FFN unit in inference mode.

    Straight-through emulation for finite differences: with `sign_at` = the input x0 of the
    operating point, the binary activations are sign(u0) - clamp(u0) + clamp(u) (u = x + b);
    with `weight_at` = W0, the weights are W_b(W0) - W0 + W. `x_sign` (default x) is the input
    of the binary branch, `w` (default the layer's kernel) the latent kernel.
    """
    strides = layer.strides
    x_sign = x if x_sign is None else x_sign
    conv = layer.binary_conv
    w = f64(conv.kernel) if w is None else w
    tau = float(np.asarray(conv.kernel_quantizer.tau))
    pooled = avgpool2_same(x) if strides == 2 else x
    bias = f64(layer.move.bias)
    u = x_sign + bias
    if sign_at is None:
        s = sign(u)
    else:
        u0 = sign_at + bias
        s = sign(u0) - np.clip(u0, -1.5, 1.5) + np.clip(u, -1.5, 1.5)
    if weight_at is None:
        wb = bnext_weight(w, tau)
    else:
        wb = bnext_weight(weight_at, tau) - weight_at + w
    y = conv2d_same(s, wb, strides, layer.pad_values)
    y = prelu(batch_norm(y, layer.norm1), f64(layer.activation2.alpha))
    if layer.recoupling is not None:
        y = info_recoupling(layer.recoupling, pooled, y)
    if layer.activation1 is not None:  # ELM attention
        residual = prelu(x, f64(layer.activation1.alpha))
        if strides == 2:
            residual = avgpool2_same(residual)
        return batch_norm(y * residual, layer.norm2) + residual
    if layer.norm2 is not None:
        y = batch_norm(y, layer.norm2)
    return y + pooled


def block(layer, x):
    """BNextBlock: the 3x3 unit, then one 1x1 unit or two concatenated."""
    y = unit(layer.unit3x3, x)
    outs = [unit(u, y) for u in layer.units1x1]
    return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)


def randomize(layer, seed: int = 3, tau=None) -> None:
    """Give every variable of `layer` but the kernels a random value (BN variances, gammas and
    PReLU slopes in [0.5, 1.5], the info-recoupling scale s in [0.05, 0.95], the rest normal
    with std 0.3), and every temperature `tau` the value `tau` (left alone when None)."""
    rng = np.random.default_rng(seed)
    for var in layer.weights:
        name = var.path.split("/")[-1]
        shape = tuple(var.shape)
        if name == "kernel" or (name == "tau" and tau is None):
            continue
        if name == "tau":
            value = np.full(shape, tau)
        elif name == "scale":
            value = rng.uniform(0.05, 0.95, shape)
        elif name in ("moving_variance", "alpha", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        var.assign(value.astype("float32"))


def central_difference(fn, x, eps: float = 1e-6, indices=None):
    """d fn / d x (fn: array -> scalar) by central differences, at the flat `indices` (default
    every element); the other elements are NaN."""
    x = np.asarray(x, np.float64)
    grad = np.full(x.size, np.nan)
    flat = x.ravel()
    for i in (range(x.size) if indices is None else indices):
        plus, minus = flat.copy(), flat.copy()
        plus[i] += eps
        minus[i] -= eps
        grad[i] = (fn(plus.reshape(x.shape)) - fn(minus.reshape(x.shape))) / (2 * eps)
    return grad.reshape(x.shape)
