"""Fold a BatchNormalization that directly follows a binary layer with correction terms.

LCE folds a constant Mul/Add into the bconv only when it directly follows the bconv. A binary
layer whose export adds correction terms (kernel offset: window sum; zero padding of an affine
input: border map) ends in an ADD/ADD_N, so a following BatchNormalization (BN) would stay as a
float MUL + ADD over the whole output. Here such a BN is folded into the layer's export instead
(`LayerPlan.fold_affine`: every term scaled by ``k = gamma / sqrt(var + eps)``, the shift
``beta - mean * k`` added to the bconv's constant) and is an identity in the export graph.

Which BN follows which layer is read from the model's structure:

* functional (and Sequential) models, also nested ones: the graph of layer calls. A BN folds when
  the layer is called once, the BN is the only consumer of its output (which is not a model
  output), the BN is called once, and it normalises the last (channels) axis;
* blocks that declare their pairs (`batch_norm_pairs()`, e.g. `kbnn.blocks.AdaBinBlock`): the
  block applies those BNs through `kbnn.export_mode.call_layer`.

Every BN that follows such a layer and is not folded gets a warning naming both layers and the
reason; so does a layer whose container neither is a functional model nor declares its pairs but
holds a BN (kbnn cannot see what follows the layer there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from kbnn import _keras_compat as compat

from .layers import LayerPlan

__all__ = ["FoldResult", "batch_norm_affine", "fold_batch_norms", "identity_call"]


def identity_call(inputs, *args, **kwargs):
    """The export form of a folded BatchNormalization."""
    return inputs


@dataclass
class FoldResult:
    """What `fold_batch_norms` did.

    Attributes:
        folded: the folded BNs (each an identity in the export graph).
        in_graphs: those of them that sit in functional graphs (the export runs those graphs
            with the BN replaced, see `kbnn._keras_compat.call_functional`).
        warnings: one line per BN (or layer) that was not folded, with the reason.
    """

    folded: list = field(default_factory=list)
    in_graphs: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


def _bn_problem(bn, rank: int | None, output_dtype) -> str | None:
    """Why `bn` cannot fold as a per-output-channel map (None: it can)."""
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if axis is None or not (axis == -1 or (rank is not None and axis == rank - 1)):
        return f"it normalises axis {bn.axis!r}, not the last (channels) axis"
    if keras.backend.standardize_dtype(output_dtype) != "float32":
        return (f"the layer's output is {keras.backend.standardize_dtype(output_dtype)} "
                "(only float32 outputs fold)")
    return None


def _fold(plan: LayerPlan, bn, result: FoldResult, in_graph: bool) -> None:
    plan.export_call = plan.fold_affine(*batch_norm_affine(bn))
    plan.folded_bn = bn
    plan.correction.append(f"batch norm {bn.name} folded into the bconv multiplier/bias and the "
                           "correction terms")
    result.folded.append(bn)
    if in_graph:
        result.in_graphs.append(bn)


def _not_folded(result: FoldResult, plan: LayerPlan, bn, why: str) -> None:
    result.warnings.append(
        f"{bn.name}: the BatchNormalization after {plan.name} is not folded into its export "
        f"({why}); it stays as float MUL + ADD ops over the layer's output")


def _fold_in_graph(graph, candidates: dict, result: FoldResult, seen: set) -> None:
    nodes = compat.functional_nodes(graph)
    calls: dict[int, list] = {}
    for operation, _inputs, outputs in nodes:
        calls.setdefault(id(operation), []).append(outputs)
    outputs_of_model = {id(t) for t in graph.outputs}
    for operation, _inputs, outputs in nodes:
        plan = candidates.get(id(operation))
        if plan is None:
            continue
        seen.add(id(operation))
        consumers = [(op, ins) for op, ins, _ in nodes
                     if any(t is outputs[0] for t in ins)]
        bns = [op for op, _ in consumers if isinstance(op, keras.layers.BatchNormalization)]
        if not bns:
            continue
        bn = bns[0]
        if len(calls[id(operation)]) > 1:
            _not_folded(result, plan, bn, f"{plan.name} is called "
                                          f"{len(calls[id(operation)])} times")
        elif len(consumers) > 1:
            others = ", ".join(op.name for op, _ in consumers if op is not bn)
            _not_folded(result, plan, bn, f"the output of {plan.name} also feeds {others}"
                        if others else f"the BN reads the output of {plan.name} twice")
        elif id(outputs[0]) in outputs_of_model:
            _not_folded(result, plan, bn, f"the output of {plan.name} is also a model output")
        elif len(calls[id(bn)]) > 1:
            _not_folded(result, plan, bn, f"{bn.name} is called {len(calls[id(bn)])} times")
        else:
            problem = _bn_problem(bn, len(outputs[0].shape), outputs[0].dtype)
            if problem:
                _not_folded(result, plan, bn, problem)
            else:
                _fold(plan, bn, result, in_graph=True)


def _parents(model) -> dict[int, keras.layers.Layer]:
    """id(layer) -> the layer that directly tracks it."""
    parents = {}
    for layer in compat.flatten_layers(model, include_self=True, recursive=True):
        for child in compat.flatten_layers(layer, include_self=False, recursive=False):
            parents.setdefault(id(child), layer)
    return parents


def fold_batch_norms(model, plans: list[LayerPlan]) -> FoldResult:
    """Fold each BN that directly and only follows a plan with `fold_affine` into that plan
    (`export_call` replaced, `folded_bn` set), reading the model's structure."""
    result = FoldResult()
    candidates = {id(p.layer): p for p in plans
                  if p.lowerable and p.fold_affine is not None and p.folded_bn is None}
    if not candidates:
        return result
    seen: set[int] = set()
    layers = compat.flatten_layers(model, include_self=True, recursive=True)
    for layer in layers:
        if compat.is_functional(layer):
            _fold_in_graph(layer, candidates, result, seen)
        pairs = getattr(layer, "batch_norm_pairs", None)
        if callable(pairs):
            # A block that declares its pairs declares, too, that no other BN follows its
            # convolutions.
            seen.update(id(sub) for sub in compat.flatten_layers(layer, include_self=False,
                                                                 recursive=False))
            for conv, bn in pairs():
                plan = candidates.get(id(conv))
                if plan is None or plan.folded_bn is bn:
                    continue  # not a candidate, or the same pair declared by block and unit
                seen.add(id(conv))
                problem = _bn_problem(bn, None, conv.compute_dtype)
                if problem:
                    _not_folded(result, plan, bn, problem)
                else:
                    _fold(plan, bn, result, in_graph=False)
    parents = _parents(model)
    for plan in candidates.values():
        if id(plan.layer) in seen:
            continue
        parent = parents.get(id(plan.layer))
        holds_bn = parent is not None and any(
            isinstance(sub, keras.layers.BatchNormalization)
            for sub in compat.flatten_layers(parent, include_self=False, recursive=False))
        if holds_bn:
            result.warnings.append(
                f"{plan.name}: its export adds correction terms, so a BatchNormalization after "
                f"it can only be folded by kbnn, which cannot see what follows it inside "
                f"{parent.name} ({type(parent).__name__} is neither a functional model nor "
                "declares batch_norm_pairs()); a BatchNormalization there stays as float "
                "MUL + ADD ops")
    return result
