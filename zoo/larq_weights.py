"""Load larq-zoo's Keras 2 HDF5 weight files (``quicknet_weights.h5`` and the like) into kbnn
models.

larq-zoo saved its weights with tf.keras ``model.save_weights(..., save_format="h5")``: the root
group (or its ``model_weights`` group, for whole-model files) has the attribute ``layer_names``
(split into ``layer_names0``, ``layer_names1``, ... when it exceeds HDF5's 64 KB attribute limit)
listing every layer in model order; each layer has a group with the attribute ``weight_names``
(``"<layer>/<variable>:0"``, trainable variables first, then non-trainable) and one dataset per
weight at ``<layer>/<weight name>``.

`load_larq_zoo_weights(model, path)` pairs the file's layers that have weights with the kbnn
model's layers that have weights, in order (or by name with ``match="name"``), checks every
variable's shape, and assigns nothing unless every pair fits.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable

import numpy as np

from kbnn import _keras_compat

__all__ = ["LarqLayerWeights", "load_larq_zoo_weights", "read_larq_zoo_weights"]


class LarqLayerWeights(tuple):
    """``(layer name, [(weight name, array), ...])`` of one layer of a larq-zoo file."""

    __slots__ = ()

    def __new__(cls, name: str, weights: list[tuple[str, np.ndarray]]):
        return super().__new__(cls, (name, weights))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def weights(self) -> list[tuple[str, np.ndarray]]:
        return self[1]


def _decode(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _chunked_attribute(group, name: str) -> list[str] | None:
    """tf.keras' `load_attributes_from_hdf5_group`: `name`, or `name0`, `name1`, ..."""
    if name in group.attrs:
        return _decode(group.attrs[name])
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_decode(group.attrs[f"{name}{chunk}"]))
        chunk += 1
    return values if chunk else None


def read_larq_zoo_weights(path, skip: Iterable[str] = ()) -> list[LarqLayerWeights]:
    """The layers of a Keras 2 HDF5 weights file that have weights, in the file's layer order.

    Args:
        path: the .h5 file.
        skip: fnmatch patterns of weight names (``"<layer>/<var>:0"``) to leave out.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"larq-zoo weights file {path} does not exist")
    skip = tuple(skip)
    layers = []
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f and \
            _chunked_attribute(f, "layer_names") is None else f
        names = _chunked_attribute(group, "layer_names")
        if names is None:
            raise ValueError(
                f"{path} is not a Keras 2 HDF5 weights file (no `layer_names` attribute); Keras 3 "
                ".weights.h5 files load with model.load_weights")
        for layer_name in names:
            if layer_name not in group:
                raise ValueError(f"{path}: layer {layer_name!r} is listed but has no group")
            g = group[layer_name]
            weight_names = _chunked_attribute(g, "weight_names") or []
            weights = [(w, np.asarray(g[w])) for w in weight_names
                       if not any(fnmatch.fnmatchcase(w, p) for p in skip)]
            if weights:
                layers.append(LarqLayerWeights(layer_name, weights))
    return layers


def _own_weights(layer) -> list:
    """The variables `layer` itself owns (not its sublayers'), trainable first, as tf.keras
    ordered them in `save_weights`."""
    inner = {id(v) for sub in _keras_compat.flatten_layers(layer, include_self=False)
             for v in sub.weights}
    ordered = list(layer.trainable_weights) + list(layer.non_trainable_weights)
    return [v for v in ordered if id(v) not in inner]


def _walk(layer):
    """Sublayers depth first, each before its own sublayers, in tracking order (Keras'
    recursive layer walk reverses the order of each layer's sublayers)."""
    for sub in _keras_compat.flatten_layers(layer, include_self=False, recursive=False):
        yield sub
        yield from _walk(sub)


def _weighted_layers(model) -> list[tuple[str, list]]:
    out, seen = [], set()
    for layer in _walk(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        own = _own_weights(layer)
        if own:
            out.append((layer.name, own))
    return out


def load_larq_zoo_weights(model, path, *, match: str = "order",
                          skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Assign a larq-zoo (Keras 2 HDF5) weights file to a kbnn `model`.

    Args:
        model: a built Keras model whose weighted layers correspond to the file's.
        path: the .h5 file.
        match: "order" pairs the i-th weighted layer of the file with the i-th weighted layer
            of the model (layers in `model` order, nested layers depth first); "name" pairs
            layers with equal names.
        skip: fnmatch patterns of file weight names to ignore.

    Returns:
        The ``(file layer, model layer)`` pairs, in order.

    Raises:
        ValueError: a different number of weighted layers (the first unpaired ones named), a
            layer with a different number of weights, or a shape mismatch (naming both layers,
            the weight, and both shapes). Nothing is assigned then.
    """
    if match not in ("order", "name"):
        raise ValueError(f"Invalid value for argument `match`. Expected 'order' or 'name'. "
                         f"Received match={match!r}.")
    file_layers = read_larq_zoo_weights(path, skip=skip)
    model_layers = _weighted_layers(model)
    if match == "name":
        by_name = dict(model_layers)
        missing = [name for name, _ in file_layers if name not in by_name]
        unfilled = [name for name, _ in model_layers
                    if name not in {n for n, _ in file_layers}]
        if missing or unfilled:
            raise ValueError(
                f"Cannot load {path} into {model.name} by name: file layers without a model "
                f"layer: {missing}; model layers with weights not in the file: {unfilled}")
        pairs = [(layer, (layer.name, by_name[layer.name])) for layer in file_layers]
    else:
        if len(file_layers) != len(model_layers):
            n = min(len(file_layers), len(model_layers))
            raise ValueError(
                f"Cannot load {path} into {model.name}: the file has {len(file_layers)} layers "
                f"with weights, the model {len(model_layers)}. Unpaired file layers: "
                f"{[name for name, _ in file_layers[n:n + 5]]}; unpaired model layers: "
                f"{[name for name, _ in model_layers[n:n + 5]]}.")
        pairs = list(zip(file_layers, model_layers))
    problems, assignments = [], []
    for (file_name, file_weights), (model_name, variables) in pairs:
        if len(file_weights) != len(variables):
            problems.append(
                f"file layer {file_name!r} has {len(file_weights)} weights "
                f"{[w for w, _ in file_weights]}, model layer {model_name!r} has "
                f"{len(variables)} {[v.path for v in variables]}")
            continue
        for (weight_name, value), variable in zip(file_weights, variables):
            if tuple(value.shape) != tuple(variable.shape):
                problems.append(
                    f"file layer {file_name!r} weight {weight_name!r} has shape "
                    f"{tuple(value.shape)}, model layer {model_name!r} variable "
                    f"{variable.path!r} has shape {tuple(variable.shape)}")
            else:
                assignments.append((variable, value))
    if problems:
        raise ValueError(f"Cannot load {path} into {model.name}:\n  " + "\n  ".join(problems))
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return [(f[0], m[0]) for f, m in pairs]
