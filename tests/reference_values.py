"""Reference data shared by the tests: the METHODS.md §13 hand-computed values, numpy references
of the surrogate gradients and GradientTape helpers.

Nothing here comes from kbnn: the values are written by hand and the references are plain numpy,
so the tests that import them stay independent of the code under test.
"""

import numpy as np
import tensorflow as tf

# METHODS.md §13 reference points.
X = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5], dtype=np.float32)
SIGN_X = np.array([-1, -1, -1, -1, 1, 1, 1, 1, 1], dtype=np.float32)  # sign(0) = +1
STE_GRAD = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0], dtype=np.float32)  # 1[|x| <= 1]

# METHODS.md §13 XNOR rows, one output channel per row (mean|row| = 0.5 and 0.625). Kernels are
# (..., C_out), so a test transposes them; W13 is the first row as a single-channel kernel.
XNOR_ROWS = np.array([[0.5, -1.0, 0.25, -0.25], [2.0, -0.1, 0.1, 0.3]], np.float32)
W13 = np.array([0.5, -1.0, 0.25, -0.25], np.float32).reshape(4, 1)

# METHODS.md §13 EDE gradient k t (1 - tanh^2(t x)) at X: schedule start (t=0.1, k=10), middle
# (t=1, k=1) and end (t=10, k=1).
EDE_GRAD_START = [0.978, 0.990, 0.998, 0.999, 1.0, 0.999, 0.998, 0.990, 0.978]
EDE_GRAD_MIDDLE = [0.1807, 0.4200, 0.7864, 0.9400, 1.0, 0.9400, 0.7864, 0.4200, 0.1807]
EDE_GRAD_END = [0.0, 0.0, 0.0018, 0.2659, 10.0, 0.2659, 0.0018, 0.0, 0.0]


def approx_sign_grad_np(u):
    """F'(u) of Bi-Real's ApproxSign (arXiv 1808.00278): 2 + 2u on [-1, 0), 2 - 2u on [0, 1),
    0 elsewhere (the PyTorch-mask convention of METHODS.md §13)."""
    return np.where((u >= -1) & (u < 0), 2 + 2 * u, np.where((u >= 0) & (u < 1), 2 - 2 * u, 0.0))


def ede_grad_np(u, k, t):
    """IR-Net's EDE surrogate gradient k t (1 - tanh^2(t u)) (arXiv 1909.10788)."""
    return k * t * (1.0 - np.tanh(t * u) ** 2)


def value_and_grads(fn, x, variables=(), upstream=None):
    """fn(x), and the gradients of sum(upstream * fn(x)) with respect to x and to each of
    `variables`, through tf.GradientTape; all as numpy: (y, dx, [d variable, ...])."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y if upstream is None else y * upstream)
    grads = tape.gradient(loss, [x, *variables])
    return y.numpy(), grads[0].numpy(), [g.numpy() for g in grads[1:]]


def quantizer_step(quantizer, w, upstream, variables=(), training=True):
    """One eager forward/backward of the weight quantizer `quantizer` on `w`: (output, its
    losses as floats, d/dw, [d/d variable, ...]) of sum(upstream * output) + sum(losses); the
    output and d/dw as numpy, the gradients of `variables` as the tape returns them."""
    w = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(w)
        out = quantizer(w, training=training)
        losses = list(quantizer.losses)
        total = tf.reduce_sum(out * upstream) + tf.add_n([tf.constant(0.0)] + losses)
    dw, *grads = tape.gradient(total, [w, *variables])
    return out.numpy(), [float(v) for v in losses], dw.numpy(), grads


def traced_training_step(quantizer, kernel, variables=()):
    """`step(upstream)`: one training call of the weight quantizer `quantizer` on the
    tf.Variable `kernel`, traced into a tf.function (as `fit` runs it), returning the gradients
    of sum(upstream * quantizer(kernel)) + the quantizer's losses with respect to `kernel` and
    to each of `variables`."""

    @tf.function
    def step(upstream):
        with tf.GradientTape() as tape:
            out = quantizer(kernel, training=True)
            total = tf.reduce_sum(out * upstream) + tf.add_n(quantizer.losses)
        return tape.gradient(total, [kernel, *variables])

    return step


def value_and_grad(fn, x, upstream=None):
    """fn(x) and d(sum(upstream * fn(x)))/dx through tf.GradientTape, as numpy."""
    y, dx, _ = value_and_grads(fn, x, upstream=upstream)
    return y, dx
