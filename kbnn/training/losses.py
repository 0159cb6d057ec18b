"""Feature losses between a binary student and a full-precision teacher, as registered Keras
losses called ``loss(teacher_features, student_features, sample_weight=None)`` where each
argument is one feature map or a list of them (block outputs, in network order):

* `RepresentationDistillation`: DIR-Net's Representation-align Binarization-aware Distillation
  (Qin et al., arXiv 2109.12338), an L2 loss between per-sample normalised feature maps;
* `LipschitzRetentionLoss`: LCR-BNN's Lipschitz continuity retention (Shang et al.,
  arXiv 2207.06540), the squared difference of the estimated Lipschitz constants of each pair of
  consecutive blocks.

The teacher's features get no gradient. `kbnn.training.Distiller(feature_losses=...)` feeds them
the outputs of named layers of a student and a teacher during `fit` (docs/training.md, 'Feature
losses').
"""

from __future__ import annotations

import itertools
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

__all__ = ["LCR_METHODS", "LipschitzRetentionLoss", "RepresentationDistillation",
           "adaptive_average_pool", "lipschitz_constants", "retention_matrix"]

#: The values of `LipschitzRetentionLoss(method=...)`.
LCR_METHODS = ("power_iteration", "svd")
_EPSILON = 1e-12


def _as_list(features) -> list:
    if isinstance(features, (list, tuple)):
        return list(features)
    if isinstance(features, dict):
        return [features[k] for k in sorted(features)]
    return [features]


def _pairs(owner: str, teacher, student) -> tuple[list, list]:
    teacher, student = _as_list(teacher), _as_list(student)
    if len(teacher) != len(student):
        raise ValueError(
            f"{owner} needs as many teacher features as student features. Received "
            f"{len(teacher)} teacher and {len(student)} student feature maps.")
    return teacher, student


def _check_real(owner: str, name: str, value, low: float = 0.0) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value >= low):
        raise ValueError(f"Invalid value for argument `{name}` of {owner}. Expected a finite "
                         f"number >= {low:g}. Received {name}={value!r}.")
    return float(value)


def _loss_config(loss) -> dict:
    dtype = loss.dtype_policy.name if getattr(loss, "dtype_policy", None) else None
    return {"dtype": dtype, **keras.losses.Loss.get_config(loss)}


# --------------------------------------------------------------- RepresentationDistillation

@keras.saving.register_keras_serializable(package="kbnn")
class RepresentationDistillation(keras.losses.Loss):
    """DIR-Net's Representation-align Binarization-aware Distillation, RBD (Qin et al.,
    "Distribution-sensitive Information Retention for Accurate Binary Neural Network",
    arXiv 2109.12338; see docs/methods.md, section 'DIR-Net'): the binary student's block
    outputs are aligned with those of a full-precision teacher. For each pair j of feature maps
    (teacher T_j, student S_j, same shape) and each sample n, flattened to vectors,

        l_n = sum_j w_j || S_jn / ||S_jn||_2  -  T_jn / ||T_jn||_2 ||_2^2  /  sum_j w_j

    (the squared L2 distance of the per-sample L2-normalised features, 0 ... 4 per pair, averaged
    over the pairs), with no gradient to the teacher; the Keras reduction then averages over the
    batch. ``normalize=False`` compares the raw features by their mean squared difference
    instead. The abstract (arXiv v2, the IJCV text) says only "retaining the representation
    information by distilling the representations between full-precision and binarized
    networks"; the paper's equations (which features, normalisation, distance, weighting) could
    not be found (docs/methods.md lists what was searched), so this form is kbnn's reading.
    `kbnn.training.Distiller(feature_losses=[FeatureDistillation(RepresentationDistillation(),
    student_layers, teacher_layers)])` feeds it block outputs during `fit`.

    Called as ``loss(teacher_features, student_features, sample_weight=None)``, each a tensor
    or a list of tensors (block outputs) of shape (batch, ...).

    Args:
        normalize: L2-normalise each sample's feature map first (True).
        pair_weights: one weight per pair (>= 0), or None for equal weights.
        reduction, name, dtype: as any Keras loss.
    """

    def __init__(self, normalize: bool = True, pair_weights=None,
                 reduction="sum_over_batch_size", name="representation_distillation",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not isinstance(normalize, bool):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                "Invalid value for argument `normalize` of RepresentationDistillation. Expected "
                f"True or False. Received normalize={normalize!r}.")
        self.normalize = normalize
        if pair_weights is not None:
            pair_weights = [_check_real("RepresentationDistillation", "pair_weights", w)
                            for w in pair_weights]
            if not pair_weights or sum(pair_weights) <= 0:
                raise ValueError(
                    "Invalid value for argument `pair_weights` of RepresentationDistillation. "
                    "Expected None or a non-empty list of weights >= 0 with a positive sum. "
                    f"Received pair_weights={pair_weights!r}.")
        self.pair_weights = pair_weights

    def pair_distance(self, teacher, student):
        """Per-sample distance of one pair (shape (batch,))."""
        if tuple(teacher.shape[1:]) != tuple(student.shape[1:]):
            raise ValueError(
                "RepresentationDistillation compares feature maps of the same shape. Received "
                f"a teacher map of shape {tuple(teacher.shape)} and a student map of shape "
                f"{tuple(student.shape)}.")
        teacher = tf.stop_gradient(teacher)
        batch = tf.shape(student)[0]
        s = tf.reshape(student, [batch, -1])
        t = tf.reshape(teacher, [batch, -1])
        if not self.normalize:
            return tf.reduce_mean(tf.square(s - t), axis=-1)
        s = s / tf.sqrt(tf.reduce_sum(tf.square(s), axis=-1, keepdims=True) + _EPSILON)
        t = t / tf.sqrt(tf.reduce_sum(tf.square(t), axis=-1, keepdims=True) + _EPSILON)
        return tf.reduce_sum(tf.square(s - t), axis=-1)

    def call(self, y_true, y_pred):
        teacher, student = _pairs("RepresentationDistillation", y_true, y_pred)
        weights = self.pair_weights if self.pair_weights is not None else [1.0] * len(student)
        if len(weights) != len(student):
            raise ValueError(
                f"RepresentationDistillation has {len(weights)} pair weights but received "
                f"{len(student)} pairs of feature maps.")
        total = sum(w * self.pair_distance(t, s)
                    for w, t, s in zip(weights, teacher, student) if w)
        return total / sum(weights)

    def get_config(self) -> dict:
        return {**_loss_config(self), "normalize": self.normalize,
                "pair_weights": self.pair_weights}


# ------------------------------------------------------------------- LipschitzRetentionLoss

def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PyTorch's adaptive average pooling along one axis as a (size_out, size_in) matrix:
    output i averages inputs floor(i in/out) ... ceil((i + 1) in/out) - 1."""
    matrix = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_average_pool(x, size: tuple[int, int]):
    """PyTorch's `adaptive_avg_pool2d` of an NHWC map to spatial `size` (static shapes)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    if (h, w) == tuple(size):
        return x
    rows = tf.constant(_pool_matrix(h, size[0]), x.dtype)
    cols = tf.constant(_pool_matrix(w, size[1]), x.dtype)
    return tf.einsum("ih,nhwc,jw->nijc", rows, x, cols)


def _as_map(x):
    x = tf.convert_to_tensor(x)
    if len(x.shape) == 2:
        return x[:, None, None, :]
    if len(x.shape) != 4:
        raise ValueError("LipschitzRetentionLoss takes NHWC feature maps (or (batch, C) "
                         f"vectors). Received a feature of shape {tuple(x.shape)}.")
    return x


def retention_matrix(block_input, block_output):
    """LCR's retention matrix of one block, per sample: the input map average-pooled to the
    output's spatial size (PyTorch's adaptive pooling, as the official code), then
    ``RM = F_in^T F_out / (H W)``, shape (batch, C_in, C_out) (arXiv 2207.06540)."""
    f_in, f_out = _as_map(block_input), _as_map(block_output)
    (h_in, w_in), (h_out, w_out) = f_in.shape[1:3], f_out.shape[1:3]
    if any(d is None for d in (h_in, w_in, h_out, w_out)):
        raise ValueError("LipschitzRetentionLoss needs static spatial sizes. Received feature "
                         f"maps of shapes {tuple(f_in.shape)} and {tuple(f_out.shape)}.")
    if h_in < h_out or w_in < w_out:
        raise ValueError(
            "LipschitzRetentionLoss pairs consecutive blocks whose spatial size does not grow. "
            f"Received a block input of shape {tuple(f_in.shape)} and output of shape "
            f"{tuple(f_out.shape)}.")
    f_in = adaptive_average_pool(f_in, (int(h_out), int(w_out)))
    batch = tf.shape(f_in)[0]
    positions = int(h_out) * int(w_out)
    a = tf.reshape(f_in, [batch, positions, int(f_in.shape[-1])])
    b = tf.reshape(f_out, [batch, positions, int(f_out.shape[-1])])
    return tf.matmul(a, b, transpose_a=True) / tf.cast(positions, a.dtype)


def lipschitz_constants(block_input, block_output, method: str = "power_iteration",
                        power_iterations: int = 1):
    """The spectral norm of each sample's retention matrix RM (shape (batch,)): LCR's estimate of
    the block's Lipschitz constant (arXiv 2207.06540).

    "power_iteration" (the official code): power iterations on ``K = RM RM^T`` from the
    all-ones vector, ``sqrt(||K v||)`` with v the last iterate before the final product; with
    one iteration v is the un-normalised all-ones vector, so the value is ``sqrt(||K 1||)``,
    what the official code computes. "svd": the exact largest singular value of RM.
    """
    rm = retention_matrix(block_input, block_output)
    if method == "svd":
        return tf.reduce_max(tf.linalg.svd(rm, compute_uv=False), axis=-1)
    k = tf.matmul(rm, rm, transpose_b=True)  # (batch, C_in, C_in)
    v = tf.ones_like(k[..., :1])
    norm = None
    for _ in range(power_iterations):
        m = tf.matmul(k, v)
        norm = tf.sqrt(tf.reduce_sum(tf.square(m), axis=1, keepdims=True))
        v = m / (norm + _EPSILON)
    return tf.sqrt(norm[:, 0, 0])


@keras.saving.register_keras_serializable(package="kbnn")
class LipschitzRetentionLoss(keras.losses.Loss):
    """LCR-BNN's Lipschitz continuity retention (Shang, Xu, Duan, Zong, Nie, Yan, "Lipschitz
    Continuity Retained Binary Neural Network", ECCV 2022, arXiv 2207.06540; official code
    `42Shawn/LCR_BNN`, `LCR/imagenet/LCR.py`; see docs/methods.md, section 'LCR-BNN').

    Given the outputs F_0 ... F_{N-1} of N consecutive blocks of the binary student and of its
    full-precision teacher (the same architecture), block i's Lipschitz constant is estimated as
    the spectral norm of its retention matrix ``RM_i = F_i^T F_{i+1} / (H W)`` (F_i average-pooled
    to F_{i+1}'s size; `lipschitz_constants`), and per sample

        l = sum_{i=0}^{N-2} (sigma_student,i - sigma_teacher,i)^2 / 2^(N-1-i)

    (deeper pairs weigh more), with no gradient to the teacher; the Keras reduction averages
    over the batch, which is the official `mse_loss` of the per-sample values. The official
    training adds ``alpha * l / (batch_size * 1e4)`` to the cross-entropy with alpha = 8
    (ImageNet, README) on top of IR-Net's binarizers: weigh this loss accordingly.

    Called as ``loss(teacher_features, student_features, sample_weight=None)``, each a list of
    NHWC maps (or (batch, C) vectors) in network order; fewer than two maps have no pair and
    give 0.

    Args:
        method: "power_iteration" (default, the official code) or "svd" (the exact spectral
            norm).
        power_iterations: iterations of "power_iteration" (1, the official code's value).
        reduction, name, dtype: as any Keras loss.
    """

    def __init__(self, method: str = "power_iteration", power_iterations: int = 1,
                 reduction="sum_over_batch_size", name="lipschitz_retention", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if method not in LCR_METHODS:
            raise ValueError("Invalid value for argument `method` of LipschitzRetentionLoss. "
                             f"Expected 'power_iteration' or 'svd'. Received method={method!r}.")
        if not (isinstance(power_iterations, numbers.Integral)
                and not isinstance(power_iterations, bool) and power_iterations >= 1):
            raise ValueError("Invalid value for argument `power_iterations` of "
                             "LipschitzRetentionLoss. Expected a strictly positive integer. "
                             f"Received power_iterations={power_iterations!r}.")
        self.method = method
        self.power_iterations = int(power_iterations)

    def constants(self, features) -> list:
        """The Lipschitz estimate (shape (batch,)) of each consecutive pair of `features`."""
        features = _as_list(features)
        return [lipschitz_constants(a, b, self.method, self.power_iterations)
                for a, b in itertools.pairwise(features)]

    def call(self, y_true, y_pred):
        teacher, student = _pairs("LipschitzRetentionLoss", y_true, y_pred)
        count = len(student)
        if count < 2:  # no pair: 0, still connected to the student (a zero gradient)
            flat = tf.reshape(student[0], [tf.shape(student[0])[0], -1])
            return 0.0 * tf.reduce_sum(flat, axis=-1)
        teacher = [tf.stop_gradient(t) for t in teacher]
        total = 0.0
        for i, (sigma_s, sigma_t) in enumerate(zip(self.constants(student),
                                                   self.constants(teacher))):
            total = total + tf.square(sigma_s - sigma_t) / float(2 ** (count - 1 - i))
        return total

    def get_config(self) -> dict:
        return {**_loss_config(self), "method": self.method,
                "power_iterations": self.power_iterations}
