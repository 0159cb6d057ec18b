"""The official BNext checkpoints (`hpi-xnor/BNext`, `src/bnext.py`; arXiv 2211.12933) mapped
onto `kbnn.zoo.BNextTiny` / `BNextSmall` / `BNextMiddle` / `BNextLarge` (registered for those
architecture names, so ``kbnn.zoo.load_weights(model, "bnext.pth.tar")`` and the builders'
``weights="...pth.tar"`` use it). Module names of the official code:

* ``feature.0``: the stem, ``conv1`` and ``bn1`` (its ``prelu`` is created but never called:
  listed as unused);
* ``feature.{i}`` (i >= 1): a BasicBlock whose 3x3 unit is ``Attention`` (an `Attention` or an
  `FFN_3x3` module, depending on the block's mode; ``FFN_3x3`` in the ablation without
  ELM-Attention) and whose 1x1 unit is ``FFN``, or ``FFN_1`` and ``FFN_2`` where the width
  doubles. Each unit: ``move.bias`` (1, C, 1, 1), ``binary_activation.temperature`` (the
  sign's temperature: a positive scale before the sign, no effect on its forward; unused),
  ``binary_conv.weight`` (O, I, k, k) and ``binary_conv.temperature`` (-> the `BNextWeight`
  tau), ``norm1``/``norm2`` (BatchNorm2d; ``norm2`` of an FFN unit without info-recoupling is
  never called: unused), ``activation1`` (the PReLU of the ELM-Attention residual; unused in
  the FFN units) and ``activation2`` (nn.PReLU(C)), ``scale`` (1, C, 1, 1) and
  ``se.se.1`` / ``se.se.3`` (the SE branch's 1x1 convs, with bias);
* ``prelu`` (the head's PReLU) and ``fc`` (the classifier; left out without the top).

Only the float variant (``bits=None``) has a published checkpoint layout here; the 8-bit
variant's fake-quantization ranges have no counterpart and make a strict load fail.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .torch_checkpoint import (
    TorchMapping,
    _quantizer_variable,
    batch_norm_targets,
    conv_kernel,
    conv_targets,
    dense_targets,
    per_channel,
    register_torch_mapping,
)

__all__ = ["bnext_mapping", "prelu_slope", "temperature"]

ARCHITECTURES = ("BNextTiny", "BNextSmall", "BNextMiddle", "BNextLarge")


def prelu_slope(w: np.ndarray) -> np.ndarray:
    """`nn.PReLU(C)` weight (C,) -> a Keras PReLU alpha with shared spatial axes (1, 1, C)."""
    return np.reshape(w, (1, 1, -1))


def temperature(w: np.ndarray) -> np.ndarray:
    """The official temperature buffer (1,) -> the scalar tau of `BNextWeight`."""
    return np.reshape(w, ())


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _unit_targets(prefix: str, unit) -> tuple[dict[str, Any], list[str]]:
    conv = unit.binary_conv
    tau = _quantizer_variable(
        conv, "kernel_quantizer", "tau", "bnext_weight",
        f"The official checkpoint's {prefix}.binary_conv.temperature maps onto the tau of "
        f"{conv.name}'s kernel quantizer, which is ")
    targets: dict[str, Any] = {
        f"{prefix}.move.bias": (unit.move.bias, per_channel),
        f"{prefix}.binary_conv.weight": (conv.kernel, conv_kernel),
        f"{prefix}.binary_conv.temperature": (tau, temperature),
        **batch_norm_targets(f"{prefix}.norm1", unit.norm1),
        f"{prefix}.activation2.weight": (unit.activation2.alpha, prelu_slope),
    }
    unused = [f"{prefix}.binary_activation.temperature"]
    if unit.activation1 is not None:
        targets[f"{prefix}.activation1.weight"] = (unit.activation1.alpha, prelu_slope)
    else:
        unused.append(f"{prefix}.activation1.weight")
    if unit.norm2 is not None:
        targets.update(batch_norm_targets(f"{prefix}.norm2", unit.norm2))
    else:
        unused.append(f"{prefix}.norm2.*")
    if unit.recoupling is not None:
        targets[f"{prefix}.scale"] = (unit.recoupling.scale, per_channel)
        se = unit.recoupling.se
        targets.update(conv_targets(f"{prefix}.se.se.1", se.conv1))
        targets.update(conv_targets(f"{prefix}.se.se.3", se.conv2))
    return targets, unused


def bnext_mapping(model) -> TorchMapping:
    """The official BNext checkpoint (`src/bnext.py` module names, see the module docstring)
    onto a `kbnn.zoo` BNext model of the same size and width (default quantizers; without the
    top the checkpoint's ``fc`` is left out)."""
    targets: dict[str, Any] = {
        **conv_targets("feature.0.conv1", model.get_layer("stem_conv")),
        **batch_norm_targets("feature.0.bn1", model.get_layer("stem_bn")),
        "prelu.weight": (model.get_layer("head_prelu").alpha, prelu_slope),
    }
    unused = ["feature.0.prelu.weight"]  # created by the official stem, never called
    i = 1
    while _has_layer(model, f"block{i}"):
        block, p = model.get_layer(f"block{i}"), f"feature.{i}"
        first = "Attention" if block.elm_attention else "FFN_3x3"
        parts = ["FFN"] if len(block.units1x1) == 1 else ["FFN_1", "FFN_2"]
        for name, unit in zip([first, *parts], block.units):
            unit_targets, unit_unused = _unit_targets(f"{p}.{name}", unit)
            targets.update(unit_targets)
            unused += unit_unused
        i += 1
    if _has_layer(model, "predictions"):
        targets.update(dense_targets("fc", model.get_layer("predictions")))
    else:
        unused += ["fc.weight", "fc.bias"]
    return TorchMapping(targets, unused=tuple(unused))


for _architecture in ARCHITECTURES:
    register_torch_mapping(_architecture, bnext_mapping)
