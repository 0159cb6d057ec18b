"""Fold a BatchNormalization that directly follows a binary layer with correction terms.

LCE folds a constant Mul/Add into the bconv only when it directly follows the bconv. A binary
layer whose export adds correction terms (kernel offset: window sum; zero padding of an affine
input: border map) ends in an ADD/ADD_N, so a following BatchNormalization (BN) would stay as a
float MUL + ADD over the whole output. Here such a BN is folded into the layer's export instead
(`LayerPlan.fold_affine`: every term scaled by ``k = gamma / sqrt(var + eps)``, the shift
``beta - mean * k`` added to the bconv's constant) and becomes an identity during export.

Which BN follows which layer is read from the graph that the export traces, so it works the same
for functional/Sequential models and for custom blocks that call ``bn(conv(x))``: one trace of
the model (as `model.export` traces it) with every BN replaced by a recorded ``tf.identity``. A
BN is folded when the layer was called once, its output tensor's *only* consumer is that BN's
identity (not another op, not a model output), the BN was called once, and it normalises the
channels-last axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .layers import LayerPlan

__all__ = ["batch_norm_affine", "fold_batch_norms", "identity_call", "restore_call", "set_call"]

_MISSING = object()


def set_call(layer: keras.layers.Layer, fn: Callable):
    """Install `fn` as `layer.call` (an instance attribute); return what `restore_call` needs."""
    previous = vars(layer).get("call", _MISSING)
    layer.call = fn
    return previous


def restore_call(layer: keras.layers.Layer, previous) -> None:
    """Undo `set_call`."""
    if previous is _MISSING:
        del layer.call
    else:
        layer.call = previous


def identity_call(inputs, training=None, mask=None):
    """The export form of a folded BatchNormalization."""
    return inputs


def batch_norm_affine(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """``(k, c)`` with ``BN(y) = k * y + c`` in inference mode, per channel (float64)."""
    def value(weight, default):
        return default if weight is None else np.asarray(keras.ops.convert_to_numpy(weight),
                                                         np.float64)

    mean = value(bn.moving_mean, None)
    var = value(bn.moving_variance, None)
    gamma = value(bn.gamma if bn.scale else None, np.ones_like(mean))
    beta = value(bn.beta if bn.center else None, np.zeros_like(mean))
    k = gamma / np.sqrt(var + bn.epsilon)
    return k, beta - mean * k


def _batch_norms(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if type(layer) is keras.layers.BatchNormalization]


def _trace(model, plans: list[LayerPlan], bns: list) -> tuple[dict, dict]:
    """Trace the model once as `model.export` does; return the export outputs of each plan's
    layer and the identity op of each BN call, keyed by id of the plan / BN."""
    from keras.src.export.export_utils import get_input_signature

    outputs: dict[int, list] = {id(p): [] for p in plans}
    probes: dict[int, list] = {id(bn): [] for bn in bns}

    def recorder(plan):
        def export_call(inputs):
            y = plan.export_call(inputs)
            outputs[id(plan)].append(y)
            return y
        return export_call

    def probe(bn):
        def call(inputs, training=None, mask=None):
            y = tf.identity(inputs)
            probes[id(bn)].append((inputs, y.op))
            return y
        return call

    undo = []
    try:
        for plan in plans:
            plan.layer._export_call = recorder(plan)
            undo.append(lambda layer=plan.layer: setattr(layer, "_export_call", None))
        for bn in bns:
            previous = set_call(bn, probe(bn))
            undo.append(lambda bn=bn, previous=previous: restore_call(bn, previous))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            endpoint = keras.export.ExportArchive().track_and_add_endpoint(
                "probe", model, get_input_signature(model))
            endpoint.get_concrete_function()
    finally:
        for step in reversed(undo):
            step()
    return outputs, probes


def _channels_last(bn, rank: int) -> bool:
    return bn.axis in (-1, rank - 1)


def fold_batch_norms(model, plans: list[LayerPlan]) -> list[LayerPlan]:
    """Fold each BN that directly and only follows a plan with `fold_affine` into that plan
    (`export_call` replaced, `folded_bn` set). Returns the plans that got a BN. Any failure to
    trace leaves every plan as it was (the export then reports its own error)."""
    candidates = [p for p in plans
                  if p.lowerable and p.fold_affine is not None and p.folded_bn is None]
    bns = _batch_norms(model) if candidates else []
    if not bns:
        return []
    try:
        outputs, probes = _trace(model, candidates, bns)
    except Exception:  # noqa: BLE001 - folding is an optimisation; the export reports errors
        return []
    folded = []
    for plan in candidates:
        if len(outputs[id(plan)]) != 1:
            continue  # not called, or called more than once (shared layer)
        y = outputs[id(plan)][0]
        consumers = y.consumers()
        if len(consumers) != 1 or y.dtype != tf.float32:
            continue
        for bn in bns:
            calls = probes[id(bn)]
            if (len(calls) == 1 and calls[0][0] is y and calls[0][1] is consumers[0]
                    and _channels_last(bn, y.shape.rank)):
                plan.export_call = plan.fold_affine(*batch_norm_affine(bn))
                plan.folded_bn = bn
                plan.correction.append(f"batch norm {bn.name} folded into the bconv "
                                       "multiplier/bias and the correction terms")
                folded.append(plan)
                break
    return folded
