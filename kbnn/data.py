"""Data for kbnn: the bundled digits, and tf.data pipelines for CIFAR, ImageNet and image folders.

* `load_digits_split`: scikit-learn's 8x8 digits (1797 samples, 10 classes, pixel values 0..16;
  UCI "Optical Recognition of Handwritten Digits"), shipped inside scikit-learn so nothing is
  downloaded, as float32 NumPy arrays shaped (N, 8, 8, 1) with a stratified split drawn with a
  fixed seed.
* `digits`, `cifar`, `imagenet`, `image_folder`: `tf.data.Dataset` pipelines of batched
  ``(images, labels)``: float32 images (B, H, W, C), normalised, and int64 labels (B,). A
  training split is augmented as the papers' official code does (see `RECIPES`), an evaluation
  split gets the deterministic resize and centre crop; shuffling, batching and prefetching are
  included. CIFAR, ImageNet and folders are read through tensorflow-datasets, an optional
  dependency (``pip install 'kbnn[data]'``); `import kbnn.data` works without it.
* The augmentations, usable on their own: `random_resized_crop`, `resize_and_center_crop`,
  `lighting`, `rand_augment`, `pad_and_random_crop`, `normalize`. Each random one is a
  *stateless* function of a seed tensor of shape [2], so a pipeline given a `seed` is
  reproducible: the same seed gives the same images in the same order, epoch after epoch
  (each epoch draws new crops: the per-image seeds come from
  ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``).

Sources of the recipes (docs/training.md, "Data", has the details):

* ReActNet (Liu et al., arXiv 2003.03488; `liuzechun/ReActNet` train.py) and Bi-Real Net
  (arXiv 1808.00278; `liuzechun/Bi-Real-net` pytorch_implementation train.py):
  RandomResizedCrop(224, scale=(0.08, 1)) + Lighting(0.1) (AlexNet's PCA lighting, Krizhevsky
  et al. 2012) + horizontal flip; evaluation: resize the shorter side to 256, centre crop 224;
  ImageNet mean/std normalisation.
* BNext (Guo et al., arXiv 2211.12933; `hpi-xnor/BNext`, timm's ``create_transform``):
  RandomResizedCrop(224, bicubic) + horizontal flip + RandAugment ``rand-m7-mstd0.5-inc1``
  (Cubuk et al., arXiv 1909.13719, in timm's form); evaluation: resize to 224 / 0.95, centre crop.
* CIFAR: 4-pixel zero padding, random 32x32 crop, horizontal flip (He et al., arXiv 1512.03385),
  per-channel mean/std of the training images.

RandAugment is implemented here with TensorFlow ops rather than with `keras.layers.RandAugment`:
the Keras layer draws its strength uniformly up to `factor`, has another list of operations,
no per-operation probability, and seeds through a stateful generator, so it cannot reproduce
timm's policy nor give per-image reproducible augmentation.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass

import numpy as np

from kbnn.checks import argument_error, check_positive_int

__all__ = ["IMAGE_SHAPE", "MAX_PIXEL", "NUM_CLASSES", "DigitsSplit", "load_digits_split"]
__all__ += ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN",
            "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC", "IMAGENET_STD",
            "NUM_CLASSES_BY_DATASET", "RAND_AUGMENT_OPS", "RECIPES", "DatasetInfo",
            "RandAugmentPolicy", "Recipe", "cifar", "digits", "image_folder", "imagenet",
            "lighting", "normalize", "pad_and_random_crop", "rand_augment", "rand_augment_op",
            "random_resized_crop", "resize_and_center_crop"]

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


# ================================================================ tf.data pipelines
#
# TensorFlow and tensorflow-datasets are imported inside the functions: `load_digits_split`
# needs neither, and tensorflow-datasets is optional.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of the ImageNet RGB pixels (values in [0, 1]), as fb.resnet.torch and the
# ReActNet / Bi-Real / MetaPruning code give them: eigenvalues, and eigenvectors as columns.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))
# Per-channel mean and standard deviation of the CIFAR training images (values in [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

NUM_CLASSES_BY_DATASET = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
_TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet2012"}
_TRAIN_SPLIT = re.compile(r"^\s*train\b")


@dataclass(frozen=True)
class Recipe:
    """The image pipeline of a paper's official code: training augmentation and evaluation
    resizing (see the module docstring for the sources).

    Attributes:
        name: the recipe's name.
        crop: training crop: "random_resized" (ImageNet) or "pad" (CIFAR's padded crop).
        scale, ratio: the random-resized crop's area fraction and aspect-ratio ranges.
        padding: the padded crop's zero padding (pixels).
        lighting: the standard deviation of AlexNet's PCA lighting (0: none).
        flip: horizontal flips with probability 0.5.
        rand_augment: a RandAugment policy in timm's notation, or None.
        interpolation: "bilinear" or "bicubic", for every resize.
        crop_fraction: evaluation: resize the shorter side to image_size / crop_fraction, then
            centre-crop image_size (0.875: 224 from 256).
        antialias: antialiased resizing, as PIL's (torchvision, timm); False is faster
            (bicubic about 8x, bilinear about 2x) but aliases when it shrinks.
    """

    name: str
    crop: str = "random_resized"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    padding: int = 4
    lighting: float = 0.0
    flip: bool = True
    rand_augment: str | None = None
    interpolation: str = "bilinear"
    crop_fraction: float = 0.875
    antialias: bool = True

    def describe(self, training: bool, image_size: int) -> tuple[str, ...]:
        """The steps of the pipeline, in order, as short strings (for reports)."""
        if not training:
            if self.crop == "pad":
                return ("no augmentation",)
            resize = math.floor(image_size / self.crop_fraction)
            return (f"resize shorter side to {resize} ({self.interpolation})",
                    f"centre crop {image_size}")
        steps = []
        if self.crop == "pad":
            steps.append(f"pad {self.padding} + random crop")
        else:
            steps.append(f"random resized crop {image_size} (scale {self.scale[0]:g}-"
                         f"{self.scale[1]:g}, {self.interpolation})")
        if self.lighting:
            steps.append(f"PCA lighting {self.lighting:g}")
        if self.flip:
            steps.append("horizontal flip")
        if self.rand_augment:
            steps.append(f"RandAugment {self.rand_augment}")
        return tuple(steps)


RECIPES = {
    "reactnet": Recipe("reactnet", lighting=0.1),
    "bireal": Recipe("bireal", lighting=0.1),
    "bnext": Recipe("bnext", rand_augment="rand-m7-mstd0.5-inc1", interpolation="bicubic",
                    crop_fraction=0.95),
    "basic": Recipe("basic"),
    "cifar": Recipe("cifar", crop="pad"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a pipeline yields (returned by the pipeline functions with ``with_info=True``).

    Attributes:
        name: "digits", "cifar10", "cifar100", "imagenet" or "folder:PATH".
        split: the split read.
        num_examples: examples in the split (None when unknown).
        num_classes: label classes.
        image_shape: (H, W, C) of the images yielded.
        training: whether the training augmentation is applied.
        steps: the preprocessing steps, in order.
        mean, std: the per-channel normalisation (images are ``(x / 255 - mean) / std``;
            digits: ``value_range`` instead).
    """

    name: str
    split: str
    num_examples: int | None
    num_classes: int
    image_shape: tuple[int, int, int]
    training: bool
    steps: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _tfds(what: str):
    """tensorflow_datasets, or an ImportError naming the extra."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            f"{what} reads its data through tensorflow-datasets, which is not installed: "
            "pip install 'kbnn[data]' (or pip install tensorflow-datasets)") from err
    return tfds


def _check_seed(owner: str, seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise argument_error(owner, "seed", "a non-negative integer or None", seed)
    return int(seed)


def _check_recipe(owner: str, recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise argument_error(owner, "recipe", f"one of {', '.join(map(repr, RECIPES))} or a "
                              "kbnn.data.Recipe", recipe)
    return RECIPES[recipe]


def _is_training_split(split: str) -> bool:
    return bool(_TRAIN_SPLIT.match(split))


def _resolve_augment(owner: str, augment, split: str) -> bool:
    if augment is None:
        return _is_training_split(split)
    if not isinstance(augment, bool):
        raise argument_error(owner, "augment", "True, False or None (None: augment the "
                              "training split only)", augment)
    return augment


def _seed_pair(seed):
    """A stateless-op seed of shape [2] (int64) from an int or a [2] tensor."""
    import tensorflow as tf

    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.cast(seed, tf.int64)


def _split_seed(seed, num: int):
    import tensorflow as tf

    return tf.unstack(tf.random.experimental.stateless_split(_seed_pair(seed), num=num))


def _resize(image, size, interpolation: str, antialias: bool = True):
    import tensorflow as tf

    if interpolation not in ("bilinear", "bicubic", "nearest"):
        raise argument_error("kbnn.data", "interpolation", "'bilinear', 'bicubic' or "
                              "'nearest'", interpolation)
    return tf.image.resize(tf.cast(image, tf.float32), size, method=interpolation,
                           antialias=antialias and interpolation != "nearest")


# ------------------------------------------------------------------------ augmentations


def random_resized_crop(image, size, seed, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                        interpolation: str = "bilinear", attempts: int = 10,
                        antialias: bool = True):
    """torchvision's ``RandomResizedCrop``: a crop of random area (a fraction in `scale` of the
    image) and aspect ratio (log-uniform in `ratio`), resized to `size`.

    As torchvision: up to `attempts` draws, the first that fits is used; when none fits, the
    centre crop of the whole image with the aspect ratio clamped to `ratio`.

    Args:
        image: (H, W, C), any real dtype.
        size: the output height and width (an int or a pair).
        seed: a stateless seed (shape [2], or an int).
        scale, ratio: the area fraction and the aspect-ratio (width / height) ranges.
        interpolation: "bilinear" (torchvision's default) or "bicubic" (timm, BNext).
        antialias: antialiased resizing (as PIL's).

    Returns:
        float32 (size, size, C), values on the input's scale.
    """
    import tensorflow as tf

    size = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    area_seed, ratio_seed, i_seed, j_seed = _split_seed(seed, 4)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area = height * width
    target = area * tf.random.stateless_uniform([attempts], area_seed, scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform([attempts], ratio_seed, math.log(ratio[0]),
                                            math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    w = tf.round(tf.sqrt(target * aspect))
    h = tf.round(tf.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    found = tf.reduce_any(fits)
    # Fallback: the whole image, its aspect ratio clamped into `ratio` (torchvision).
    in_ratio = width / height
    fb_w = tf.where(in_ratio < ratio[0], width,
                    tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width))
    fb_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    crop_w = tf.cast(tf.where(found, w[first], fb_w), tf.int32)
    crop_h = tf.cast(tf.where(found, h[first], fb_h), tf.int32)
    max_i, max_j = shape[0] - crop_h, shape[1] - crop_w
    rand_i = tf.random.stateless_uniform([], i_seed, 0, max_i + 1, dtype=tf.int32)
    rand_j = tf.random.stateless_uniform([], j_seed, 0, max_j + 1, dtype=tf.int32)
    top = tf.where(found, rand_i, max_i // 2)
    left = tf.where(found, rand_j, max_j // 2)
    crop = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
    return _resize(crop, size, interpolation, antialias)


def resize_and_center_crop(image, size: int, crop_fraction: float = 0.875,
                           interpolation: str = "bilinear", antialias: bool = True):
    """The evaluation transform of the ImageNet recipes: resize the shorter side to
    ``floor(size / crop_fraction)`` (torchvision ``Resize(256)`` for 224 at 0.875; timm's
    ``crop_pct``), keeping the aspect ratio, then take the central ``size x size`` crop.
    Returns float32 on the input's scale."""
    import tensorflow as tf

    resize_to = math.floor(size / crop_fraction)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    short = tf.minimum(height, width)
    new_h = tf.cast(tf.maximum(tf.floor(height * resize_to / short), resize_to), tf.int32)
    new_w = tf.cast(tf.maximum(tf.floor(width * resize_to / short), resize_to), tf.int32)
    new_h = tf.where(height <= width, resize_to, new_h)
    new_w = tf.where(width <= height, resize_to, new_w)
    image = _resize(image, tf.stack([new_h, new_w]), interpolation, antialias)
    top = (new_h - size + 1) // 2
    left = (new_w - size + 1) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    return tf.ensure_shape(image, [size, size, None])


def lighting(image, seed, alphastd: float = 0.1, eigval=IMAGENET_PCA_EIGVAL,
             eigvec=IMAGENET_PCA_EIGVEC):
    """AlexNet's PCA lighting noise (Krizhevsky, Sutskever, Hinton, NeurIPS 2012): add
    ``eigvec @ (alpha * eigval)`` to every pixel, with ``alpha ~ N(0, alphastd^2)`` drawn once
    per image (3 values).

    `image` is RGB float with values in [0, 1], the scale of the eigenvalues; the result is
    clipped to [0, 1]. The official ReActNet and Bi-Real PyTorch code (``Lighting`` from
    MetaPruning) adds the same increment to the 0..255 uint8 image and casts back to uint8,
    where an increment of this size (|inc| ~ 0.01-0.05) moves a pixel by at most one grey
    level; kbnn applies it on the scale the PCA was computed on, as fb.resnet.torch does.
    """
    import tensorflow as tf

    if alphastd == 0:
        return image
    alpha = tf.random.stateless_normal([3], _seed_pair(seed), stddev=alphastd)
    eigval = tf.constant(eigval, tf.float32)
    eigvec = tf.constant(eigvec, tf.float32)
    increment = tf.linalg.matvec(eigvec, alpha * eigval)
    return tf.clip_by_value(tf.cast(image, tf.float32) + increment, 0.0, 1.0)


def pad_and_random_crop(image, seed, padding: int = 4, fill: float = 0.0):
    """The CIFAR crop: pad each side with `padding` pixels of value `fill` and take a random
    crop of the original size (torchvision ``RandomCrop(32, padding=4)``)."""
    import tensorflow as tf

    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]],
                    constant_values=tf.cast(fill, image.dtype))
    return tf.image.stateless_random_crop(padded, shape, _seed_pair(seed))


def normalize(image, mean, std):
    """``(image - mean) / std`` per channel (image, mean and std on the same scale)."""
    import tensorflow as tf

    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (tf.cast(image, tf.float32) - mean) / std


# -------------------------------------------------------------------------- RandAugment


@dataclass(frozen=True)
class RandAugmentPolicy:
    """A RandAugment policy (Cubuk, Zoph, Shlens, Le, arXiv 1909.13719) in timm's notation
    (``timm.data.auto_augment.rand_augment_transform``): ``rand-m7-mstd0.5-inc1`` is BNext's.

    Attributes:
        magnitude: ``m``, 0..10 (timm's level scale).
        num_ops: ``n``, operations per image, drawn with replacement (default 2).
        magnitude_std: ``mstd``, the standard deviation of a Gaussian noise added to the
            magnitude at each application (0: fixed), the result clipped to [0, mmax].
        magnitude_max: ``mmax`` (default 10).
        increasing: ``inc1``: the variants whose severity grows with the magnitude
            (posterize, solarize, colour, contrast, brightness, sharpness).
        prob: ``p``, the probability of applying each drawn operation (default 0.5).
    """

    magnitude: float = 9.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    increasing: bool = False
    prob: float = 0.5

    @classmethod
    def parse(cls, spec: str) -> RandAugmentPolicy:
        """Parse timm's ``rand-m9-n2-mstd0.5-mmax10-inc1-p0.5`` (any subset of the keys)."""
        if isinstance(spec, RandAugmentPolicy):
            return spec
        parts = spec.split("-") if isinstance(spec, str) else []
        if not parts or parts[0] != "rand":
            raise argument_error("RandAugmentPolicy.parse", "spec", "a timm RandAugment "
                                  "string such as 'rand-m7-mstd0.5-inc1'", spec)
        values = {}
        keys = {"mstd": "magnitude_std", "mmax": "magnitude_max", "inc": "increasing",
                "m": "magnitude", "n": "num_ops", "p": "prob"}
        for part in parts[1:]:
            key = next((k for k in keys if part.startswith(k)), None)
            try:
                number = float(part[len(key):]) if key else None
            except ValueError:
                number = None
            if key is None or number is None:
                raise argument_error("RandAugmentPolicy.parse", "spec", "keys m, n, mstd, "
                                      "mmax, inc, p followed by a number (e.g. "
                                      "'rand-m7-mstd0.5-inc1')", spec)
            values[keys[key]] = number
        if "num_ops" in values:
            values["num_ops"] = int(values["num_ops"])
        if "increasing" in values:
            values["increasing"] = bool(values["increasing"])
        return cls(**values)

    def __str__(self) -> str:
        return (f"rand-m{self.magnitude:g}-n{self.num_ops}-mstd{self.magnitude_std:g}-"
                f"mmax{self.magnitude_max:g}-inc{int(self.increasing)}-p{self.prob:g}")


RAND_AUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                    "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
                    "ShearY", "TranslateXRel", "TranslateYRel")
_TIMM_FILL = (124.0, 116.0, 104.0)  # timm's img_mean: round(255 * ImageNet mean)


def _grey(image):
    """PIL's "L" conversion (ITU-R 601-2 luma) of RGB, or the single channel."""
    import tensorflow as tf

    if image.shape[-1] == 1:
        return image
    weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
    return tf.reduce_sum(image * weights, axis=-1, keepdims=True)


def _blend(degenerate, image, factor):
    """PIL ``ImageEnhance``: ``degenerate + factor * (image - degenerate)``, clipped."""
    import tensorflow as tf

    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _affine(image, matrix, fill):
    """Output pixel (x, y) samples the input at ``(a x + b y + c, d x + e y + f)`` (PIL's
    ``Image.transform(AFFINE)`` convention), bilinear, outside pixels `fill` per channel."""
    import tensorflow as tf

    # PIL maps pixel centres (x + 0.5, y + 0.5) and samples at centres: in index coordinates
    # the offsets gain 0.5 (a + b - 1) and 0.5 (d + e - 1).
    a, b, c, d, e, f = tf.unstack(tf.cast(matrix, tf.float32))
    matrix = tf.stack([a, b, c + 0.5 * (a + b - 1.0), d, e, f + 0.5 * (d + e - 1.0)])
    transform = tf.reshape(tf.concat([matrix, tf.zeros([2])], 0), [1, 8])
    shape = tf.shape(image)[:2]

    def warp(x):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None], transforms=transform, output_shape=shape, fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")[0]

    inside = warp(tf.ones_like(image[..., :1]))
    fill = tf.constant(fill, tf.float32)[: image.shape[-1]]
    return warp(image) + (1.0 - inside) * fill


def _equalize(image):
    """PIL ``ImageOps.equalize`` per channel, on values rounded to 0..255."""
    import tensorflow as tf

    def channel(x):
        x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.int32)
        hist = tf.math.bincount(tf.reshape(x, [-1]), minlength=256, maxlength=256)
        nonzero = tf.boolean_mask(hist, hist > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        safe = tf.maximum(step, 1)
        lut = (tf.cumsum(hist, exclusive=True) + safe // 2) // safe
        lut = tf.clip_by_value(lut, 0, 255)
        out = tf.where(step > 0, tf.gather(lut, x), x)
        return tf.cast(out, tf.float32)

    return tf.stack([channel(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def _autocontrast(image):
    """PIL ``ImageOps.autocontrast`` (no cutoff) per channel: stretch [min, max] to 0..255."""
    import tensorflow as tf

    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    scale = 255.0 / tf.maximum(high - low, 1e-6)
    stretched = tf.floor(tf.clip_by_value((image - low) * scale, 0.0, 255.0))
    return tf.where(high > low, stretched, image)


def _smooth(image):
    """PIL's SMOOTH filter (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13); border pixels keep
    their value."""
    import tensorflow as tf

    channels = image.shape[-1]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    return tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]) + (
        image - tf.pad(image[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]))


def rand_augment_op(image, name: str, magnitude, sign=1.0, increasing: bool = True,
                    fill=_TIMM_FILL):
    """One RandAugment operation of `RAND_AUGMENT_OPS` at `magnitude` (0..10, timm's level
    scale), with the sign of the signed operations (rotate, shear, translate, and the
    increasing enhancements) given by `sign` (+1 or -1). See `rand_augment` for the arguments
    each operation gets. `image`: (H, W, C) float, values in [0, 255]."""
    import tensorflow as tf

    if name not in RAND_AUGMENT_OPS:
        raise argument_error("kbnn.data.rand_augment_op", "name",
                              f"one of {', '.join(RAND_AUGMENT_OPS)}", name)
    x = tf.cast(image, tf.float32)
    level = tf.cast(magnitude, tf.float32) / 10.0
    sign = tf.cast(sign, tf.float32)
    height = tf.cast(tf.shape(x)[0], tf.float32)
    width = tf.cast(tf.shape(x)[1], tf.float32)

    def enhance():
        if increasing:
            return tf.maximum(0.1, 1.0 + sign * level * 0.9)
        return level * 1.8 + 0.1

    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return 255.0 - x
    if name == "Rotate":
        # PIL's Image.rotate(degrees) (counter-clockwise) about the centre.
        theta = -(sign * level * 30.0) * math.pi / 180.0
        cx, cy = width / 2.0, height / 2.0
        a, b, d, e = tf.cos(theta), tf.sin(theta), -tf.sin(theta), tf.cos(theta)
        return _affine(x, tf.stack([a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy]),
                       fill)
    if name == "Posterize":
        keep = tf.cast(level * 4.0, tf.int32)
        bits = 4 - keep if increasing else keep
        step = tf.cast(tf.bitwise.left_shift(1, 8 - bits), tf.float32)
        return tf.floor(tf.clip_by_value(tf.round(x), 0.0, 255.0) / step) * step
    if name == "Solarize":
        threshold = tf.cast(tf.cast(level * 256.0, tf.int32), tf.float32)
        if increasing:
            threshold = 256.0 - threshold
        return tf.where(x >= threshold, 255.0 - x, x)
    if name == "SolarizeAdd":
        add = tf.cast(tf.cast(level * 110.0, tf.int32), tf.float32)
        return tf.where(x < 128.0, tf.minimum(x + add, 255.0), x)
    if name == "Color":
        return _blend(_grey(x), x, enhance())
    if name == "Contrast":
        mean = tf.floor(tf.reduce_mean(_grey(x)) + 0.5)
        return _blend(tf.fill(tf.shape(x), mean), x, enhance())
    if name == "Brightness":
        return _blend(tf.zeros_like(x), x, enhance())
    if name == "Sharpness":
        return _blend(_smooth(x), x, enhance())
    if name == "ShearX":
        return _affine(x, tf.stack([1.0, sign * level * 0.3, 0.0, 0.0, 1.0, 0.0]), fill)
    if name == "ShearY":
        return _affine(x, tf.stack([1.0, 0.0, 0.0, sign * level * 0.3, 1.0, 0.0]), fill)
    if name == "TranslateXRel":
        return _affine(x, tf.stack([1.0, 0.0, sign * level * 0.45 * width, 0.0, 1.0, 0.0]),
                       fill)
    return _affine(x, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, sign * level * 0.45 * height]),
                   fill)  # TranslateYRel


def rand_augment(image, seed, policy="rand-m7-mstd0.5-inc1", fill=_TIMM_FILL):
    """RandAugment as timm's ``RandAugment`` applies it (the policy BNext trains with).

    `policy.num_ops` operations are drawn uniformly with replacement from `RAND_AUGMENT_OPS`
    (timm's ``_RAND_TRANSFORMS`` / ``_RAND_INCREASING_TRANSFORMS``); each is applied with
    probability `policy.prob`, at a magnitude drawn from N(m, mstd^2) clipped to [0, mmax].
    The arguments at magnitude m (out of 10) are timm's: rotate +-30 m/10 degrees, shear
    +-0.3 m/10, translate +-0.45 m/10 of the size, solarize-add 110 m/10 below 128; posterize
    keeps 4 - int(0.4 m) bits and solarize inverts from 256 - int(25.6 m) up (increasing), or
    int(0.4 m) bits and from int(25.6 m) (not increasing); colour, contrast, brightness and
    sharpness blend with factor 1 +- 0.09 m (at least 0.1; increasing) or 0.18 m + 0.1. Signs
    are random. Pixels uncovered by a geometric operation get `fill` (timm: the ImageNet mean).

    Works on float images with values in [0, 255] (1 or 3 channels); geometric operations
    interpolate bilinearly, and the uint8 rounding PIL does between operations is not
    reproduced.

    Args:
        image: (H, W, C) float, values in [0, 255].
        seed: a stateless seed (shape [2], or an int).
        policy: a `RandAugmentPolicy` or timm's string.
        fill: the fill colour of geometric operations (per channel, 0..255).
    """
    import tensorflow as tf

    policy = RandAugmentPolicy.parse(policy)
    image = tf.cast(image, tf.float32)
    for op_seed in _split_seed(seed, policy.num_ops):
        choice_seed, apply_seed, magnitude_seed, sign_seed = _split_seed(op_seed, 4)
        index = tf.random.stateless_uniform([], choice_seed, 0, len(RAND_AUGMENT_OPS),
                                            dtype=tf.int32)
        apply = tf.random.stateless_uniform([], apply_seed) < policy.prob
        magnitude = policy.magnitude + policy.magnitude_std * tf.random.stateless_normal(
            [], magnitude_seed)
        magnitude = tf.clip_by_value(magnitude, 0.0, policy.magnitude_max)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        branches = [
            (lambda name=name, x=image, m=magnitude, s=sign: rand_augment_op(
                x, name, m, s, policy.increasing, fill))
            for name in RAND_AUGMENT_OPS]
        augmented = tf.switch_case(index, branches)
        image = tf.ensure_shape(tf.where(apply, augmented, image), image.shape)
    return image


_rand_augment = rand_augment  # `cifar` has an argument of that name


# ----------------------------------------------------------------------------- pipelines


def _finish(dataset, preprocess, *, training: bool, augment: bool, batch_size: int, seed,
            shuffle, shuffle_buffer: int, drop_remainder, cache: bool):
    """Cache, shuffle, per-example seeds, preprocess, batch and prefetch."""
    import tensorflow as tf

    if cache:
        dataset = dataset.cache()
    if shuffle is None:
        shuffle = training
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds.batch(2)))
        dataset = dataset.map(lambda example, s: preprocess(example[0], example[1], s),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        dataset = dataset.map(lambda x, y: preprocess(x, y, None),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if drop_remainder is None:
        drop_remainder = training
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _load_tfds(owner: str, name: str, split: str, data_dir, download: bool, decode: bool,
               shuffle_files: bool, seed):
    tfds = _tfds(owner)
    kwargs = {}
    if not decode:
        kwargs["decoders"] = {"image": tfds.decode.SkipDecoding()}
    read_config = tfds.ReadConfig(shuffle_seed=seed) if seed is not None else None
    try:
        dataset, info = tfds.load(name, split=split, data_dir=data_dir, download=download,
                                  as_supervised=True, with_info=True,
                                  shuffle_files=shuffle_files, read_config=read_config,
                                  **kwargs)
    except AssertionError as err:  # tfds: "could not find data in DIR"
        hint = (" ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar "
                "and ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual and run `tfds build "
                "imagenet2012 --data_dir DATA_DIR` (or call with download=True)."
                if name == "imagenet2012" else
                " Prepare it with `tfds build " + name + "` or call with download=True.")
        raise FileNotFoundError(f"{owner}: the tensorflow-datasets data set {name!r} is not "
                                f"prepared in {data_dir or tfds.core.constants.DATA_DIR}."
                                + hint) from err
    return dataset, info


def _split_size(info, split: str):
    try:
        return int(info.splits[split].num_examples) or None
    except (KeyError, ValueError, TypeError, AttributeError):  # unknown split, mocked metadata
        return None


def _imagenet_style(*, image_size: int, recipe: Recipe, augment: bool, mean, std):
    """The per-image function of the ImageNet-style pipelines (encoded image in)."""
    import tensorflow as tf

    def preprocess(image, label, element_seed):
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
        if augment:
            crop_seed, light_seed, flip_seed, ra_seed = _split_seed(element_seed, 4)
            image = random_resized_crop(image, image_size, crop_seed, recipe.scale,
                                        recipe.ratio, recipe.interpolation,
                                        antialias=recipe.antialias)
            if recipe.lighting:
                image = lighting(image / 255.0, light_seed, recipe.lighting) * 255.0
            if recipe.flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            if recipe.rand_augment:
                image = rand_augment(image, ra_seed, recipe.rand_augment)
        else:
            image = resize_and_center_crop(image, image_size, recipe.crop_fraction,
                                           recipe.interpolation, recipe.antialias)
        image = tf.clip_by_value(image, 0.0, 255.0) / 255.0
        image = tf.ensure_shape(normalize(image, mean, std), [image_size, image_size, 3])
        return image, tf.cast(label, tf.int64)

    return preprocess


def _imagenet_style_batches(dataset, split: str, *, training: bool, image_size: int,
                            recipe: Recipe, mean, std, batch_size: int, seed, shuffle,
                            shuffle_buffer: int, drop_remainder):
    """`dataset` (encoded images, labels) through the ImageNet-style per-image function, then
    shuffled, batched and prefetched (not cached: the encoded images are large)."""
    preprocess = _imagenet_style(image_size=image_size, recipe=recipe, augment=training,
                                 mean=mean, std=std)
    return _finish(dataset, preprocess, training=_is_training_split(split), augment=training,
                   batch_size=batch_size, seed=seed, shuffle=shuffle,
                   shuffle_buffer=shuffle_buffer, drop_remainder=drop_remainder, cache=False)


def imagenet(split: str = "train", batch_size: int = 256, image_size: int = 224, *,
             augment: bool | None = None, recipe="reactnet", data_dir: str | None = None,
             download: bool = False, seed: int | None = None, shuffle: bool | None = None,
             shuffle_buffer: int = 10_000, drop_remainder: bool | None = None,
             with_info: bool = False):
    """ImageNet (ILSVRC 2012, tensorflow-datasets ``imagenet2012``) as batched
    ``(images, labels)``: float32 (B, image_size, image_size, 3) normalised with the ImageNet
    mean and std, int64 labels in [0, 1000).

    Args:
        split: a tfds split: "train", "validation", or a slice such as "train[:1%]".
        batch_size: the global batch size (tf.distribute splits it over the replicas).
        image_size: the output height and width.
        augment: apply the recipe's training augmentation; None: for training splits only.
            Without it: resize the shorter side to image_size / crop_fraction, centre crop.
        recipe: "reactnet" (default), "bireal", "bnext", "basic" (crop and flip only), or a
            `Recipe` (see `RECIPES`).
        data_dir: tfds' data folder (default ``~/tensorflow_datasets``).
        download: let tfds download and prepare (ImageNet needs its tar files in
            DATA_DIR/downloads/manual); without it a data set that is not prepared raises
            FileNotFoundError saying what to do.
        seed: makes the file order, the shuffling and the augmentation reproducible.
        shuffle: shuffle the examples (default: for training splits).
        shuffle_buffer: the shuffle buffer (encoded images).
        drop_remainder: drop a last partial batch (default: for training splits, which keeps
            the batch shape static for tf.distribute and TPUs).
        with_info: return ``(dataset, DatasetInfo)``.
    """
    owner = "kbnn.data.imagenet"
    batch_size = check_positive_int(owner, "batch_size", batch_size)
    image_size = check_positive_int(owner, "image_size", image_size)
    seed = _check_seed(owner, seed)
    recipe = _check_recipe(owner, recipe)
    training = _resolve_augment(owner, augment, split)
    dataset, info = _load_tfds(owner, "imagenet2012", split, data_dir, download, decode=False,
                               shuffle_files=_is_training_split(split) if shuffle is None
                               else shuffle, seed=seed)
    result = _imagenet_style_batches(
        dataset, split, training=training, image_size=image_size, recipe=recipe,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=batch_size, seed=seed, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer, drop_remainder=drop_remainder)
    if not with_info:
        return result
    return result, DatasetInfo("imagenet", split, _split_size(info, split), 1000,
                               (image_size, image_size, 3), training,
                               recipe.describe(training, image_size) + ("ImageNet mean/std",),
                               IMAGENET_MEAN, IMAGENET_STD)


def image_folder(path: str, split: str = "train", batch_size: int = 64, image_size: int = 224,
                 *, augment: bool | None = None, recipe="reactnet", seed: int | None = None,
                 shuffle: bool | None = None, shuffle_buffer: int = 10_000,
                 drop_remainder: bool | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 with_info: bool = False):
    """Images in folders, ``PATH/SPLIT/LABEL/*.{jpg,png,...}`` (tensorflow-datasets'
    ``ImageFolder``: labels are the sorted class folder names), through the ImageNet-style
    pipeline of `imagenet` (RGB, normalised with `mean` and `std`, default ImageNet's)."""
    owner = "kbnn.data.image_folder"
    batch_size = check_positive_int(owner, "batch_size", batch_size)
    image_size = check_positive_int(owner, "image_size", image_size)
    seed = _check_seed(owner, seed)
    recipe = _check_recipe(owner, recipe)
    tfds = _tfds(owner)
    if not os.path.isdir(os.path.join(path, split.split("[")[0])):
        raise FileNotFoundError(f"{owner}: no split folder {split!r} in {path} (expected "
                                f"{os.path.join(path, 'SPLIT', 'LABEL', 'IMAGE')})")
    builder = tfds.folder_dataset.ImageFolder(path)
    training = _resolve_augment(owner, augment, split)
    dataset = builder.as_dataset(split=split, as_supervised=True,
                                 decoders={"image": tfds.decode.SkipDecoding()},
                                 shuffle_files=False)
    result = _imagenet_style_batches(
        dataset, split, training=training, image_size=image_size, recipe=recipe, mean=mean,
        std=std, batch_size=batch_size, seed=seed, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer, drop_remainder=drop_remainder)
    if not with_info:
        return result
    classes = builder.info.features["label"].num_classes
    return result, DatasetInfo(f"folder:{path}", split, _split_size(builder.info, split),
                               classes, (image_size, image_size, 3), training,
                               recipe.describe(training, image_size) + ("mean/std",),
                               tuple(mean), tuple(std))


def cifar(split: str = "train", batch_size: int = 128, *, classes: int = 10,
          image_size: int = 32, augment: bool | None = None, rand_augment: str | None = None,
          data_dir: str | None = None, download: bool = False, seed: int | None = None,
          shuffle: bool | None = None, shuffle_buffer: int = 50_000,
          drop_remainder: bool | None = None, cache: bool = True, with_info: bool = False):
    """CIFAR-10 or CIFAR-100 (tensorflow-datasets ``cifar10`` / ``cifar100``) as batched
    ``(images, labels)``: float32 (B, image_size, image_size, 3) normalised with the training
    set's per-channel mean and std, int64 labels.

    Training augmentation: pad 4 pixels with zeros, random 32x32 crop, horizontal flip, then
    `rand_augment` if given (a timm policy string such as "rand-m7-mstd0.5-inc1"); images are
    resized to `image_size` last (bilinear) when it is not 32.

    Args:
        split: "train", "test", or a slice such as "train[:90%]".
        classes: 10 or 100.
        cache: keep the decoded split in memory after the first pass (150 MB for 50k images).
        Others: as `imagenet`.
    """
    owner = "kbnn.data.cifar"
    batch_size = check_positive_int(owner, "batch_size", batch_size)
    image_size = check_positive_int(owner, "image_size", image_size)
    seed = _check_seed(owner, seed)
    if classes not in (10, 100):
        raise argument_error(owner, "classes", "10 or 100", classes)
    if rand_augment is not None:
        RandAugmentPolicy.parse(rand_augment)
    training = _resolve_augment(owner, augment, split)
    name = f"cifar{classes}"
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    dataset, info = _load_tfds(owner, name, split, data_dir, download, decode=True,
                               shuffle_files=False, seed=seed)
    import tensorflow as tf

    def preprocess(image, label, element_seed):
        image = tf.cast(image, tf.float32)
        if training:
            crop_seed, flip_seed, ra_seed = _split_seed(element_seed, 3)
            image = pad_and_random_crop(image, crop_seed, 4)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            if rand_augment:
                image = _rand_augment(image, ra_seed, rand_augment)
        if image_size != 32:
            image = _resize(image, (image_size, image_size), "bilinear")
        image = normalize(tf.clip_by_value(image, 0.0, 255.0) / 255.0, mean, std)
        return tf.ensure_shape(image, [image_size, image_size, 3]), tf.cast(label, tf.int64)

    result = _finish(dataset, preprocess, training=_is_training_split(split), augment=training,
                     batch_size=batch_size, seed=seed, shuffle=shuffle,
                     shuffle_buffer=shuffle_buffer, drop_remainder=drop_remainder, cache=cache)
    if not with_info:
        return result
    steps = RECIPES["cifar"].describe(training, image_size)
    if training and rand_augment:
        steps += (f"RandAugment {rand_augment}",)
    if image_size != 32:
        steps += (f"resize to {image_size}",)
    return result, DatasetInfo(name, split, _split_size(info, split), classes,
                               (image_size, image_size, 3), training,
                               steps + (f"CIFAR-{classes} mean/std",), mean, std)


_DIGITS_SPLITS = ("train", "validation", "test")


def digits(split: str = "train", batch_size: int = 64, *, image_size: int | None = None,
           channels: int = 1, augment: bool | None = None,
           value_range: tuple[float, float] = (-1.0, 1.0), split_seed: int = 0,
           test_size: float = 0.2, val_size: float = 0.1, seed: int | None = None,
           shuffle: bool | None = None, drop_remainder: bool | None = None,
           with_info: bool = False):
    """scikit-learn's digits (see `load_digits_split`) as a batched tf.data pipeline:
    float32 (B, S, S, channels) images in `value_range`, int64 labels.

    Args:
        split: "train", "validation" or "test" of ``load_digits_split(test_size, val_size,
            split_seed)`` (default: 1257 / 180 / 360 images).
        image_size: resize the 8x8 images to this size (bilinear); None keeps 8.
        channels: 1, or 3 (the grey channel repeated, for RGB models).
        augment: a random shift by up to one pixel in each direction (the border filled with
            the background value); None: for the training split only. No flips: digits are
            not mirror-symmetric.
        seed: makes the shuffling and the shifts reproducible.
        Others: as `imagenet`.
    """
    owner = "kbnn.data.digits"
    if split not in _DIGITS_SPLITS:
        raise argument_error(owner, "split", "'train', 'validation' or 'test'", split)
    batch_size = check_positive_int(owner, "batch_size", batch_size)
    image_size = check_positive_int(owner, "image_size", image_size, allow_none=True)
    if channels not in (1, 3):
        raise argument_error(owner, "channels", "1 or 3", channels)
    seed = _check_seed(owner, seed)
    training = _resolve_augment(owner, augment, split)
    data = load_digits_split(test_size=test_size, val_size=val_size, seed=split_seed,
                             value_range=value_range)
    x, y = {"train": (data.x_train, data.y_train), "validation": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test)}[split]
    if len(x) == 0:
        raise argument_error(owner, "val_size", "a fraction > 0 to read the 'validation' "
                              "split", val_size)
    import tensorflow as tf

    low = float(value_range[0])
    size = image_size or IMAGE_SHAPE[0]

    def preprocess(image, label, element_seed):
        if training:
            padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], constant_values=low)
            image = tf.image.stateless_random_crop(padded, IMAGE_SHAPE, element_seed)
        if image_size is not None and image_size != IMAGE_SHAPE[0]:
            image = tf.image.resize(image, (image_size, image_size), method="bilinear")
        if channels == 3:
            image = tf.tile(image, [1, 1, 3])
        return tf.ensure_shape(image, [size, size, channels]), label

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    options = tf.data.Options()
    # In-memory data: tf.distribute shards it by element (no files to shard).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    result = _finish(dataset, lambda image, label, s: preprocess(image, label, s),
                     training=split == "train", augment=training, batch_size=batch_size,
                     seed=seed, shuffle=shuffle, shuffle_buffer=len(x),
                     drop_remainder=drop_remainder, cache=False)
    if not with_info:
        return result
    steps = ("random shift by up to 1 pixel",) if training else ("no augmentation",)
    if image_size is not None and image_size != IMAGE_SHAPE[0]:
        steps += (f"resize to {image_size}",)
    steps += (f"values in [{value_range[0]:g}, {value_range[1]:g}]",)
    return result, DatasetInfo("digits", split, len(x), NUM_CLASSES, (size, size, channels),
                               training, steps)
