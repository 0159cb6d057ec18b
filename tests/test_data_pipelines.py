"""kbnn.data's tf.data pipelines: digits, CIFAR and ImageNet (tensorflow-datasets, mocked with
`tfds.testing.mock_data`, offline), image folders (PNG files written here), and the
augmentations of the papers' code (random-resized crop, AlexNet PCA lighting, timm's
RandAugment checked against PIL). The tests that read through tensorflow-datasets (the optional
extra ``kbnn[data]``) are skipped without it."""

import importlib
import importlib.util
import math
import sys

import numpy as np
import pytest
import tensorflow as tf

from kbnn import data

needs_tfds = pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                                reason="tensorflow-datasets (pip install 'kbnn[data]')")


@pytest.fixture
def tfds():
    import tensorflow_datasets

    return tensorflow_datasets


def _batches(dataset, n=None):
    out = []
    for i, (x, y) in enumerate(dataset):
        if n is not None and i >= n:
            break
        out.append((x.numpy(), y.numpy()))
    return out


def _range(mean, std):
    """The bounds of (x - mean) / std for x in [0, 1], per channel."""
    mean, std = np.asarray(mean), np.asarray(std)
    return (0 - mean) / std, (1 - mean) / std


def _within(x, low, high, tol=1e-5):
    return bool(np.all(x >= low - tol) and np.all(x <= high + tol))


# ------------------------------------------------------------------------------- digits


def test_digits_pipeline_shapes_dtypes_and_values():
    dataset, info = data.digits("train", 32, seed=0, with_info=True)
    x, y = next(iter(dataset))
    assert x.shape == (32, 8, 8, 1) and x.dtype == tf.float32
    assert y.shape == (32,) and y.dtype == tf.int64
    assert info.num_examples == 1257 and info.num_classes == 10 and info.training
    assert float(tf.reduce_min(x)) >= -1.0 and float(tf.reduce_max(x)) <= 1.0
    # drop_remainder for training (static batch shape), not for evaluation
    assert all(b[0].shape[0] == 32 for b in _batches(dataset))
    test = _batches(data.digits("test", 100))
    assert [len(b[1]) for b in test] == [100, 100, 100, 60]


def test_digits_evaluation_split_is_the_arrays_unaugmented_in_order():
    split = data.load_digits_split(test_size=0.2, val_size=0.1, seed=0)
    x = np.concatenate([b[0] for b in _batches(data.digits("test", 64))])
    y = np.concatenate([b[1] for b in _batches(data.digits("test", 64))])
    np.testing.assert_array_equal(x, split.x_test)
    np.testing.assert_array_equal(y, split.y_test)
    resized, info = data.digits("validation", 16, image_size=16, channels=3, with_info=True)
    xb, _ = next(iter(resized))
    assert xb.shape == (16, 16, 16, 3) and info.image_shape == (16, 16, 3)
    np.testing.assert_array_equal(xb[..., 0], xb[..., 2])


def test_digits_training_augmentation_shifts_by_at_most_one_pixel():
    split = data.load_digits_split(test_size=0.2, val_size=0.1, seed=0)
    raw = {tuple(np.round(img.ravel(), 5)) for img in split.x_train}
    x, _ = next(iter(data.digits("train", 256, seed=1)))
    x = x.numpy()
    assert not all(tuple(np.round(img.ravel(), 5)) in raw for img in x)  # augmented
    padded = np.pad(split.x_train, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
    for img in x[:20]:  # each is a crop of a padded training image
        found = any(np.array_equal(padded[n, i:i + 8, j:j + 8], img)
                    for i in range(3) for j in range(3) for n in range(len(padded))
                    if abs(padded[n].sum() - img.sum()) < 40)
        assert found
    unaugmented = np.concatenate([b[0] for b in _batches(
        data.digits("train", 64, augment=False, drop_remainder=False))])
    assert {tuple(np.round(i.ravel(), 5)) for i in unaugmented} == raw


def test_seeded_pipelines_are_reproducible_and_epochs_differ():
    def first_batches(seed):
        return _batches(data.digits("train", 64, seed=seed), 3)

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    dataset = data.digits("train", 64, seed=7)
    epoch1, epoch2 = _batches(dataset, 1), _batches(dataset, 1)  # two passes over one dataset
    assert not np.array_equal(epoch1[0][1], epoch2[0][1])  # reshuffled
    np.testing.assert_array_equal(epoch1[0][0], a[0][0])


# -------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("classes", [10, 100])
@needs_tfds
def test_cifar_pipeline_with_mocked_data(tfds, classes):
    mean, std = ((data.CIFAR10_MEAN, data.CIFAR10_STD) if classes == 10
                 else (data.CIFAR100_MEAN, data.CIFAR100_STD))
    low, high = _range(mean, std)
    with tfds.testing.mock_data(num_examples=12):
        raw = _batches(tfds.load(f"cifar{classes}", split="test", as_supervised=True).batch(12))
        test, info = data.cifar("test", 12, classes=classes, with_info=True)
        (x, y), = _batches(test)
        train, train_info = data.cifar("train", 8, classes=classes, seed=0, with_info=True)
        xt, yt = _batches(train, 1)[0]
        plain = _batches(data.cifar("train", 12, classes=classes, augment=False, shuffle=False))
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int64
    assert info.num_classes == classes and not info.training and train_info.training
    # Evaluation: exactly the normalised pixels, in the data set's order.
    np.testing.assert_allclose(x, (raw[0][0] / 255.0 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(y, raw[0][1])
    assert xt.shape == (8, 32, 32, 3) and _within(xt, low, high) and _within(x, low, high)
    assert np.all((yt >= 0) & (yt < classes))
    # Augmentation only in training: augment=False gives the plain images.
    assert not np.allclose(np.sort(xt.ravel()), np.sort(x[:8].ravel()))
    np.testing.assert_allclose(plain[0][0], x, atol=1e-5)


def test_cifar_random_crop_pads_with_zeros_and_keeps_the_size():
    image = tf.fill([32, 32, 3], 200.0)
    crops = [data.pad_and_random_crop(image, [0, s]).numpy() for s in range(20)]
    assert all(c.shape == (32, 32, 3) for c in crops)
    zero_rows = [int(np.sum(np.all(c == 0.0, axis=(1, 2)))) for c in crops]
    assert max(zero_rows) > 0 and max(zero_rows) <= 4
    assert all(set(np.unique(c)) <= {0.0, 200.0} for c in crops)


@needs_tfds
def test_cifar_with_rand_augment_and_resize(tfds):
    with tfds.testing.mock_data(num_examples=8):
        dataset, info = data.cifar("train", 4, image_size=40, seed=1,
                                   rand_augment="rand-m9-mstd0.5-inc1", with_info=True)
        x, _ = _batches(dataset, 1)[0]
    assert x.shape == (4, 40, 40, 3)
    assert "RandAugment rand-m9-mstd0.5-inc1" in info.steps and "resize to 40" in info.steps


# ----------------------------------------------------------------------------- ImageNet


@pytest.mark.parametrize("recipe", ["reactnet", "bnext"])
@needs_tfds
def test_imagenet_pipeline_with_mocked_data(tfds, recipe):
    low, high = _range(data.IMAGENET_MEAN, data.IMAGENET_STD)
    with tfds.testing.mock_data(num_examples=6):
        train, train_info = data.imagenet("train", 3, 48, recipe=recipe, seed=3, with_info=True)
        again = data.imagenet("train", 3, 48, recipe=recipe, seed=3)
        val, val_info = data.imagenet("validation", 3, 48, recipe=recipe, with_info=True)
        a, b = _batches(train, 2), _batches(again, 2)
        v1, v2 = _batches(val), _batches(val)
        raw = [int(y) for _, y in tfds.load("imagenet2012", split="validation",
                                            as_supervised=True)]
    x, y = a[0]
    assert x.shape == (3, 48, 48, 3) and x.dtype == np.float32 and y.dtype == np.int64
    assert _within(x, low, high) and _within(v1[0][0], low, high)
    assert np.all((y >= 0) & (y < 1000)) and train_info.num_classes == 1000
    for (xa, ya), (xb, yb) in zip(a, b):  # same seed, same batches
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Evaluation: deterministic, unshuffled, every image kept.
    for (xa, ya), (xb, yb) in zip(v1, v2):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert [int(t) for _, ys in v1 for t in ys] == raw
    fraction, method = (0.95, "bicubic") if recipe == "bnext" else (0.875, "bilinear")
    resize = f"resize shorter side to {math.floor(48 / fraction)} ({method})"
    assert val_info.steps[:2] == (resize, "centre crop 48")
    expected = (("PCA lighting 0.1",) if recipe == "reactnet"
                else ("RandAugment rand-m7-mstd0.5-inc1",))
    assert set(expected) <= set(train_info.steps)


@needs_tfds
def test_tensorflow_datasets_not_prepared_says_what_to_do(tfds, tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
        data.imagenet("train", 8, data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar10.*not prepared"):
        data.cifar("train", 8, data_dir=str(tmp_path))


# ------------------------------------------------------------------------- image folders


def _write_folder(root, sizes=((20, 30), (31, 17)), classes=("cat", "dog", "emu")):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                colour = np.array([40 * (c + 1), 100, 200 - 30 * i], np.uint8)
                image = np.broadcast_to(colour, (h, w, 3)).copy()
                if split == "train":
                    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    return root


@needs_tfds
def test_image_folder_pipeline(tfds, tmp_path):
    root = _write_folder(tmp_path / "images")
    val, info = data.image_folder(str(root), "val", 6, 16, with_info=True)
    (x, y), = _batches(val)
    assert x.shape == (6, 16, 16, 3) and info.num_classes == 3 and info.num_examples == 6
    # Constant-colour images stay constant through resize and centre crop: check the values.
    mean, std = np.asarray(data.IMAGENET_MEAN), np.asarray(data.IMAGENET_STD)
    for image, label in zip(x, y):
        pixel = image[8, 8] * std + mean
        assert np.allclose(image, image[0, 0], atol=1e-4)
        assert abs(pixel[0] * 255 - 40 * (label + 1)) < 0.5 and abs(pixel[1] * 255 - 100) < 0.5
    train, train_info = data.image_folder(str(root), "train", 4, 16, seed=0, recipe="bnext",
                                          with_info=True)
    xt, _ = _batches(train, 1)[0]
    assert xt.shape == (4, 16, 16, 3) and train_info.training
    with pytest.raises(FileNotFoundError, match="no split folder 'test'"):
        data.image_folder(str(root), "test", 4)


# -------------------------------------------------------------------------- augmentations


def test_random_resized_crop_whole_image_and_torchvision_fallback():
    image = tf.reshape(tf.range(20 * 40 * 3, dtype=tf.float32), [20, 40, 3])
    whole = data.random_resized_crop(image, 10, [1, 2], scale=(1.0, 1.0), ratio=(2.0, 2.0))
    np.testing.assert_allclose(whole, tf.image.resize(image, [10, 10], antialias=True),
                               rtol=1e-5)
    # No draw of area 1 with aspect ratio 1 fits a 20x40 image: torchvision's fallback is the
    # central crop with the ratio clamped into the range, 20x20 from column 10.
    fallback = data.random_resized_crop(image, 10, [3, 4], scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(fallback, tf.image.resize(image[:, 10:30], [10, 10],
                                                         antialias=True), rtol=1e-5)
    crops = [data.random_resized_crop(image, (8, 12), [5, s]) for s in range(10)]
    assert all(c.shape == (8, 12, 3) for c in crops)
    assert len({float(tf.reduce_mean(c)) for c in crops}) > 5  # random


def test_resize_and_center_crop_like_torchvision():
    image = tf.random.stateless_uniform([300, 200, 3], [0, 1], 0, 255)
    out = data.resize_and_center_crop(image, 224, 0.875)  # Resize(256) -> 384x256
    expected = tf.image.resize(image, [384, 256], antialias=True)[80:304, 16:240]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_lighting_is_alexnet_pca_noise():
    image = tf.fill([4, 5, 3], 0.5)
    assert data.lighting(image, [0, 0], alphastd=0.0) is image

    @tf.function
    def shifts(seeds):
        return tf.map_fn(lambda s: data.lighting(image, s, 0.1)[0, 0] - 0.5, seeds,
                         fn_output_signature=tf.float32)

    seeds = tf.stack([tf.zeros(2000, tf.int64), tf.range(2000, dtype=tf.int64)], axis=1)
    out = data.lighting(image, [0, 9], 0.1).numpy()
    np.testing.assert_allclose(out, np.broadcast_to(out[0, 0], out.shape), atol=1e-7)
    increments = shifts(seeds).numpy()
    eigvec, eigval = np.asarray(data.IMAGENET_PCA_EIGVEC), np.asarray(data.IMAGENET_PCA_EIGVAL)
    alphas = np.linalg.solve(eigvec, increments.T).T / eigval  # back to alpha ~ N(0, 0.1^2)
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.1)
    np.testing.assert_allclose(alphas.mean(axis=0), 0.0, atol=0.01)


def test_rand_augment_policy_parsing():
    policy = data.RandAugmentPolicy.parse("rand-m7-mstd0.5-inc1")
    assert (policy.magnitude, policy.num_ops, policy.magnitude_std, policy.increasing,
            policy.prob) == (7.0, 2, 0.5, True, 0.5)
    assert data.RandAugmentPolicy.parse("rand-m9-n3-p1-mmax12").num_ops == 3
    assert str(policy) == "rand-m7-n2-mstd0.5-mmax10-inc1-p0.5"
    for bad in ("m7", "rand-x7", "rand-m", "augmix-m7"):
        with pytest.raises(ValueError, match="`spec`"):
            data.RandAugmentPolicy.parse(bad)


def test_rand_augment_is_seeded_and_prob_zero_is_identity():
    image = tf.random.stateless_uniform([24, 20, 3], [1, 2], 0, 255)
    a = data.rand_augment(image, [4, 5], "rand-m9-mstd0.5-inc1")
    b = data.rand_augment(image, [4, 5], "rand-m9-mstd0.5-inc1")
    np.testing.assert_array_equal(a, b)
    changed = sum(not np.allclose(data.rand_augment(image, [4, s], "rand-m9-p1"), image)
                  for s in range(8))
    assert changed >= 6
    np.testing.assert_array_equal(data.rand_augment(image, [4, 5], "rand-m9-p0"), image)
    grey = data.rand_augment(image[..., :1], [4, 6], "rand-m9-p1")
    assert grey.shape == (24, 20, 1)


def _pil_op(pil_image, name, magnitude, sign, fill=(124, 116, 104)):
    """timm's operation (auto_augment.py, increasing variants) with PIL."""
    from PIL import Image, ImageEnhance, ImageOps

    level = magnitude / 10.0
    factor = max(0.1, 1.0 + sign * level * 0.9)
    affine = {"ShearX": (1, sign * level * 0.3, 0, 0, 1, 0),
              "ShearY": (1, 0, 0, sign * level * 0.3, 1, 0),
              "TranslateXRel": (1, 0, sign * level * 0.45 * pil_image.size[0], 0, 1, 0),
              "TranslateYRel": (1, 0, 0, 0, 1, sign * level * 0.45 * pil_image.size[1])}
    if name in affine:
        return pil_image.transform(pil_image.size, Image.AFFINE, affine[name],
                                   resample=Image.BILINEAR, fillcolor=fill)
    if name == "Rotate":
        return pil_image.rotate(sign * level * 30, resample=Image.BILINEAR, fillcolor=fill)
    if name == "SolarizeAdd":
        add = int(level * 110)
        return pil_image.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    enhance = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
               "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
    if name in enhance:
        return enhance[name](pil_image).enhance(factor)
    return {"AutoContrast": lambda: ImageOps.autocontrast(pil_image),
            "Equalize": lambda: ImageOps.equalize(pil_image),
            "Invert": lambda: ImageOps.invert(pil_image),
            "Posterize": lambda: ImageOps.posterize(pil_image, 4 - int(level * 4)),
            "Solarize": lambda: ImageOps.solarize(pil_image, 256 - int(level * 256))}[name]()


@pytest.mark.parametrize("name", data.RAND_AUGMENT_OPS)
def test_rand_augment_operations_match_timm_with_pil(name):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((40, 30), Image.BILINEAR))
    for sign in (1.0, -1.0):
        expected = np.asarray(_pil_op(Image.fromarray(pixels), name, 7.0, sign), np.float64)
        got = data.rand_augment_op(tf.constant(pixels, tf.float32), name, 7.0, sign).numpy()
        diff = np.abs(got - expected)
        if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
            # Same map; they differ only on the one-pixel seam between image and fill, and on
            # the image's own border (PIL samples up to half a pixel outside before filling).
            fill = np.all(expected == np.array([124, 116, 104]), axis=-1)
            fill[[0, -1], :] = fill[:, [0, -1]] = True
            seam = tf.nn.max_pool2d(fill[None, ..., None].astype(np.float32), 3, 1,
                                    "SAME").numpy()[0, ..., 0] > 0
            assert np.mean(seam) < 0.6  # most pixels are compared
            assert diff[~seam].max() <= 2.0 and diff.mean() < 2.0
        else:  # PIL rounds to uint8 between steps
            assert diff.max() <= 1.5, diff.max()


# --------------------------------------------------------------------- optional dependency


def test_import_without_tensorflow_datasets_and_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError
    module = importlib.reload(data)
    try:
        assert module.digits("test", 8) is not None  # digits need no tensorflow-datasets
        for call in (lambda: module.cifar("train", 8), lambda: module.imagenet("train", 8),
                     lambda: module.image_folder(".", "train", 8)):
            with pytest.raises(ImportError, match=r"pip install 'kbnn\[data\]'"):
                call()
    finally:
        monkeypatch.undo()
        importlib.reload(data)


@pytest.mark.parametrize("call, argument", [
    (lambda: data.digits("train", 0), "batch_size"),
    (lambda: data.digits("training", 8), "split"),
    (lambda: data.digits("train", 8, augment="yes"), "augment"),
    (lambda: data.digits("train", 8, channels=2), "channels"),
    (lambda: data.digits("train", 8, seed=-1), "seed"),
    (lambda: data.cifar("train", 8, classes=20), "classes"),
    (lambda: data.imagenet("train", 8, recipe="resnet"), "recipe"),
    (lambda: data.rand_augment_op(tf.zeros([4, 4, 3]), "Blur", 5.0), "name"),
])
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call()
