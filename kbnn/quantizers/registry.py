"""One registry that resolves quantizer string aliases, config dicts and instances."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kbnn.quantizers.base import Quantizer

__all__ = ["deserialize", "get", "known_aliases", "register_alias", "serialize"]

_ALIASES: dict[str, type] = {}


def register_alias(*aliases: str) -> Callable[[type], type]:
    """Class decorator: register `cls` as a Keras-serialisable object of package "kbnn" and
    make each alias resolve to it in `kbnn.quantizers.get`."""

    def wrap(cls: type) -> type:
        cls = keras.saving.register_keras_serializable(package="kbnn")(cls)
        for alias in aliases:
            if alias in _ALIASES and _ALIASES[alias] is not cls:
                raise ValueError(f"Quantizer alias {alias!r} is already registered.")
            _ALIASES[alias] = cls
        return cls

    return wrap


def known_aliases() -> list[str]:
    return sorted(_ALIASES)


def serialize(quantizer: Quantizer | None) -> dict | None:
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config: dict | str | None, custom_objects: dict | None = None):
    if config is None:
        return None
    if isinstance(config, str):
        return get(config)
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


def get(identifier, argument: str = "quantizer", owner: str | None = None) -> Quantizer | None:
    """Resolve `identifier` to a quantizer instance.

    Accepts ``None``, a string alias (e.g. ``"ste_sign"``), a Keras config dict, a `Quantizer`
    instance or a `Quantizer` subclass. `argument` (and `owner`, the class that takes it) name the
    caller's argument in errors.
    """
    if identifier is None:
        return None
    where = f"`{argument}`" + (f" of {owner}" if owner else "")
    if isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Quantizer):
        return identifier()
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier)
        if cls is None:
            raise ValueError(
                f"Invalid value for argument {where}: unknown quantizer {identifier!r}. "
                f"Expected one of: {', '.join(known_aliases())}, a config dict, a "
                f"kbnn.quantizers.Quantizer instance, or None."
            )
        return cls()
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
        if not isinstance(obj, Quantizer):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                f"Invalid value for argument {where}: the config {identifier!r} does not "
                f"describe a kbnn quantizer (got {type(obj).__name__})."
            )
        return obj
    raise ValueError(
        f"Invalid value for argument {where}. Expected a quantizer alias string, a config "
        f"dict, a kbnn.quantizers.Quantizer instance, or None. Received: {identifier!r} "
        f"(of type {type(identifier).__name__})."
    )
