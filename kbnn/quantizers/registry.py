"""One registry that resolves quantizer string aliases, config dicts and instances."""

from __future__ import annotations

import copy
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
    """The registered quantizer string aliases, sorted (infrastructure, no paper)."""
    return sorted(_ALIASES)


def serialize(quantizer: Quantizer | None) -> dict | None:
    """The Keras config dict of `quantizer` (``None`` for ``None``); the inverse of
    `deserialize`."""
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def serialize_recipe(quantizer: Quantizer | None) -> dict | None:
    """A detached config from which to build copies of `quantizer` (``None`` for ``None``):
    `serialize` without the build config, the instance name and Keras' "shared_object_id" tags.

    Layers and blocks that make one quantizer per convolution from one argument keep this.
    It is a deep copy: while a model is saved, Keras keeps the dicts it serialised and later
    adds a "shared_object_id" to one when it meets an object at the same address (a freed
    object's address reused), which must not reach a stored recipe.
    """
    if quantizer is None:
        return None
    config = copy.deepcopy(serialize(quantizer))
    config.pop("build_config", None)
    _drop_shared_object_ids(config)
    config.get("config", {}).pop("name", None)
    return config


def _drop_shared_object_ids(config) -> None:
    if isinstance(config, dict):
        config.pop("shared_object_id", None)
        for value in config.values():
            _drop_shared_object_ids(value)
    elif isinstance(config, list):
        for value in config:
            _drop_shared_object_ids(value)


def _quantizer_custom_objects() -> dict[str, type]:
    """Every kbnn quantizer class by its class name and by each of its aliases, so that a plain
    config dict ``{"class_name": "SteSign" or "ste_sign", "config": {...}}`` resolves."""
    objects = {
        name.split(">", 1)[1]: cls
        for name, cls in keras.saving.get_custom_objects().items()
        if name.startswith("kbnn>") and isinstance(cls, type) and issubclass(cls, Quantizer)
    }
    objects.update({cls.__name__: cls for cls in _ALIASES.values()})
    objects.update(_ALIASES)
    return objects


def deserialize(config: dict | str | None, custom_objects: dict | None = None):
    """A quantizer from a config dict (full `serialize` output, or a plain
    ``{"class_name": ..., "config": ...}`` whose class name is a quantizer class or alias), a
    string alias, or ``None``."""
    if config is None:
        return None
    if isinstance(config, str):
        return get(config)
    objects = {**_quantizer_custom_objects(), **(custom_objects or {})}
    return keras.saving.deserialize_keras_object(config, custom_objects=objects)


def get(identifier, argument: str = "quantizer", owner: str | None = None) -> Quantizer | None:
    """Resolve `identifier` to a quantizer instance.

    Accepts ``None``, a string alias (e.g. ``"ste_sign"``), a Keras config dict (`serialize`
    output, or a plain ``{"class_name": "SteSign" or "ste_sign", "config": {...}}``), a
    `Quantizer` instance or a `Quantizer` subclass. Any failure is a ``ValueError`` naming the
    argument. `argument` (and `owner`, the class that takes it) name the
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
        expected = (f"Expected the config of a kbnn quantizer, e.g. {{'class_name': 'SteSign', "
                    f"'config': {{}}}}, whose class_name is a quantizer class or one of: "
                    f"{', '.join(known_aliases())}")
        try:
            obj = deserialize(identifier)
        except (AttributeError, ImportError, LookupError, TypeError, ValueError) as err:
            class_name = identifier.get("class_name")
            if "module" not in identifier and (not isinstance(class_name, str)
                                               or class_name not in _quantizer_custom_objects()):
                reason = f"class_name {class_name!r} is not a kbnn quantizer class or alias"
            else:
                root = _root_cause(err)  # Keras wraps the constructor's own error
                reason = f"{type(root).__name__}: {_first_line(root)}"
            raise ValueError(
                f"Invalid value for argument {where}: cannot build a quantizer from the config "
                f"{identifier!r} ({reason}). {expected}."
            ) from None
        if not isinstance(obj, Quantizer):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                f"Invalid value for argument {where}: the config {identifier!r} does not "
                f"describe a kbnn quantizer (got {type(obj).__name__}). {expected}."
            )
        return obj
    raise ValueError(
        f"Invalid value for argument {where}. Expected a quantizer alias string, a config "
        f"dict, a kbnn.quantizers.Quantizer instance, or None. Received: {identifier!r} "
        f"(of type {type(identifier).__name__})."
    )


def _first_line(err: Exception, limit: int = 200) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _root_cause(err: BaseException) -> BaseException:
    seen = {id(err)}
    while (inner := err.__cause__ or err.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        err = inner
    return err
