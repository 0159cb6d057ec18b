"""The digits data set bundled with scikit-learn, ready for a Keras image model.

8x8 grey-level images of handwritten digits (1797 samples, 10 classes, pixel values 0..16;
UCI "Optical Recognition of Handwritten Digits"), shipped inside scikit-learn so nothing is
downloaded. `load_digits_split` returns float32 images shaped (N, 8, 8, 1) and a stratified
train/test split drawn with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IMAGE_SHAPE", "MAX_PIXEL", "NUM_CLASSES", "DigitsSplit", "load_digits_split"]

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
MAX_PIXEL = 16.0
_RANGES = {(-1.0, 1.0), (0.0, 1.0)}


@dataclass(frozen=True)
class DigitsSplit:
    """Train, validation and test arrays: images float32 (N, 8, 8, 1), labels int64 (N,).

    The validation arrays are empty (0 samples) when no validation split was asked for.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The digits demo needs scikit-learn (it ships the data set): pip install scikit-learn"
        ) from err
    digits = load_digits()
    return digits.images, digits.target


def load_digits_split(
    test_size: float = 0.2,
    val_size: float = 0.0,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> DigitsSplit:
    """Load scikit-learn's digits and split them, stratified by class, with a fixed seed.

    Args:
        test_size: fraction of all samples held out for testing, in (0, 1).
        val_size: fraction of all samples held out for validation (taken from what is left
            after the test split, also stratified), in [0, 1 - test_size).
        seed: seed of the split (the same seed gives the same split).
        value_range: ``(-1.0, 1.0)`` (pixel / 8 - 1) or ``(0.0, 1.0)`` (pixel / 16).

    Returns:
        A `DigitsSplit` with float32 images shaped (N, 8, 8, 1) and int64 labels. With the
        defaults: 1437 train and 360 test samples.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(
            "Invalid value for argument `test_size` of load_digits_split. Expected a fraction "
            f"in (0, 1). Received test_size={test_size}."
        )
    if not 0.0 <= val_size < 1.0 - test_size:
        raise ValueError(
            "Invalid value for argument `val_size` of load_digits_split. Expected a fraction "
            f"in [0, 1 - test_size) = [0, {1.0 - test_size:g}). Received val_size={val_size}."
        )
    value_range = tuple(float(v) for v in value_range)
    if value_range not in _RANGES:
        raise ValueError(
            "Invalid value for argument `value_range` of load_digits_split. Expected (-1, 1) "
            f"or (0, 1). Received value_range={value_range}."
        )
    from sklearn.model_selection import train_test_split

    images, labels = _load_sklearn_digits()
    low, high = value_range
    x = (images.astype(np.float32) / MAX_PIXEL) * (high - low) + low
    x = x.reshape((-1,) + IMAGE_SHAPE).astype(np.float32)
    y = labels.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    x_val, y_val = x[:0], y[:0]
    if val_size > 0.0:
        x_train, x_val, y_train, y_val = train_test_split(
            x_train, y_train, test_size=val_size / (1.0 - test_size), random_state=seed,
            stratify=y_train,
        )
    return DigitsSplit(x_train, y_train, x_val, y_val, x_test, y_test)
