"""The export mode: one context-scoped switch from a layer's training form to its export form.

The converter enters `export_scope({layer: export_function, ...})` around the trace of the
export graph. Inside it, each named layer computes ``export_function(inputs)`` instead of its
training form (kbnn's quantized layers and `FakeQuant` consult `export_override` when called);
outside it, and on other threads, nothing changes. The scope lives in a `contextvars.ContextVar`,
the same mechanism Python uses for per-thread / per-task state, so the model is never modified
and conversions can run concurrently. This mirrors Keras' own `quantization_mode` ->
`quantized_call` dispatch, where a mode, not a patched instance, selects the form.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["call_layer", "export_override", "export_scope"]

_ACTIVE: contextvars.ContextVar[Mapping[int, Callable] | None] = contextvars.ContextVar(
    "kbnn_export_scope", default=None)


@contextlib.contextmanager
def export_scope(overrides: Mapping[Any, Callable]) -> Iterator[None]:
    """Within the block, each layer in `overrides` computes ``overrides[layer](inputs)`` instead
    of its training form (on this thread / context only). Scopes nest; the inner one wins."""
    outer = _ACTIVE.get() or {}
    token = _ACTIVE.set({**outer, **{id(layer): fn for layer, fn in overrides.items()}})
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def export_override(layer) -> Callable | None:
    """The export function of `layer` in the active `export_scope`, or None."""
    active = _ACTIVE.get()
    return None if active is None else active.get(id(layer))


def call_layer(layer, inputs, **kwargs):
    """``layer(inputs, **kwargs)``, or the layer's export function while an `export_scope`
    names it. For blocks calling a plain Keras sub-layer that the converter may fold away (a
    BatchNormalization that a block declares in `batch_norm_pairs()`)."""
    export_call = export_override(layer)
    if export_call is None:
        return layer(inputs, **kwargs)
    return export_call(inputs)
