"""Weights trained on scikit-learn's 8x8 digits, shipped inside kbnn.zoo (zoo/weights/) and
registered as ``weights="digits"``: small, fast checks that a zoo architecture trains, saves,
loads and converts (examples/train_zoo_digits.py trains them).

Each entry fixes the builder options the weights need (`DigitsModel.options`: 8x8x1 input,
10 classes, a narrow width, ...). ``kbnn.zoo.get(name, weights="digits")`` fills them in;
other values raise a ValueError naming the options (so does a builder called directly with
``weights="digits"`` and other options).
"""

from __future__ import annotations

import dataclasses

__all__ = ["DIGITS_MODELS", "DigitsModel", "digits_options"]

_DATASET = "scikit-learn digits (8x8x1, pixel / 8 - 1; kbnn.data.load_digits_split test split)"


@dataclasses.dataclass(frozen=True)
class DigitsModel:
    """The builder options of one architecture's digits weights and the test accuracy (in
    percent, on the 360 test images of `kbnn.data.load_digits_split()`) they reach."""

    options: dict
    top1: float

    @property
    def file_name(self) -> str:
        return f"{self.architecture}_digits.weights.h5"

    architecture: str = ""


def _options(width_multiplier: float, **extra) -> dict:
    return {"input_shape": (8, 8, 1), "classes": 10, "classifier_activation": None,
            "width_multiplier": width_multiplier, **extra}


DIGITS_MODELS: dict[str, DigitsModel] = {
    m.architecture: m for m in (
        DigitsModel(_options(0.125, pad_values=1.0), top1=91.11,
                    architecture="ReActNetResNet18"),
        DigitsModel(_options(0.125, pad_values=1.0), top1=84.72, architecture="BiRealNet18"),
        # width 1/16: stem 2, blocks 4 ... 64 channels (~125k parameters); the weights are in
        # the binary regime (tau < 1e-7), so the model converts
        DigitsModel(_options(0.0625, pad_values=1.0), top1=84.17,
                    architecture="BNextTiny"),
    )
}


def digits_options(architecture: str, given: dict) -> dict:
    """`given` builder options completed with the digits ones of `architecture`; a ValueError
    naming the needed options when one of `given` differs, or when the architecture has no
    digits weights."""
    model = DIGITS_MODELS.get(architecture)
    if model is None:
        raise ValueError(
            f"Invalid value for argument `weights` of {architecture}: no 'digits' weights for "
            f"this architecture. Architectures with digits weights: {', '.join(DIGITS_MODELS)}.")
    wrong = {k: v for k, v in given.items() if k in model.options and
             _normal(v) != _normal(model.options[k])}
    if wrong:
        raise ValueError(
            f"Invalid value for argument `weights` of {architecture}: weights='digits' need "
            f"the builder options {model.options!r} (kbnn.zoo.get({architecture!r}, "
            f"weights='digits') sets them). Received {wrong!r}.")
    return {**given, **model.options}


def _normal(value):
    return tuple(value) if isinstance(value, list) else value


def register() -> None:
    """Register every digits entry (`kbnn.zoo.weights.register_weights`)."""
    from .weights import WeightsEntry, register_weights

    for model in DIGITS_MODELS.values():
        register_weights(WeightsEntry(
            name="digits", architecture=model.architecture, file=f"weights/{model.file_name}",
            dataset=_DATASET, top1=model.top1, format="keras",
            top1_source="examples/train_zoo_digits.py (test split of load_digits_split())",
            source="kbnn: examples/train_zoo_digits.py",
            notes=f"build with {model.options!r} (kbnn.zoo.get(..., weights='digits') does)"),
            overwrite=True)
