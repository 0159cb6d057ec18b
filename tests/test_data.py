"""kbnn.data: the scikit-learn digits as (N, 8, 8, 1) float32 images with a stratified split."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from kbnn.data import load_digits_split


def test_shapes_dtypes_and_default_split_sizes():
    d = load_digits_split()
    # 1797 images; 20 % test -> ceil(0.2 * 1797) = 360 test (sklearn rounds the test part up).
    assert d.x_train.shape == (1437, 8, 8, 1) and d.x_test.shape == (360, 8, 8, 1)
    assert d.y_train.shape == (1437,) and d.y_test.shape == (360,)
    assert d.x_val.shape == (0, 8, 8, 1) and d.y_val.shape == (0,)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.y_train.dtype == np.int64
    assert d.num_classes == 10


def test_value_ranges_map_pixels_linearly():
    raw = load_digits()
    pixels = raw.images.reshape(-1, 64)
    for value_range, expected in (((-1.0, 1.0), pixels / 8.0 - 1.0), ((0.0, 1.0), pixels / 16.0)):
        d = load_digits_split(value_range=value_range)
        x = np.concatenate([d.x_train, d.x_test]).reshape(-1, 64)
        lo, hi = value_range
        assert x.min() == lo and x.max() == hi
        # Every produced image is one of the raw images under the affine map (as a set of rows).
        want = {tuple(r) for r in np.round(expected, 5)}
        got = {tuple(r) for r in np.round(x.astype(np.float64), 5)}
        assert got <= want


def test_split_is_a_partition_and_stratified():
    d = load_digits_split(val_size=0.1)
    raw_counts = np.bincount(load_digits().target)  # 178 182 177 183 181 182 181 179 174 180
    total = np.bincount(np.concatenate([d.y_train, d.y_val, d.y_test]), minlength=10)
    np.testing.assert_array_equal(total, raw_counts)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    assert len(d.y_test) == 360 and len(d.y_val) == 180
    for labels in (d.y_train, d.y_val, d.y_test):
        share = np.bincount(labels, minlength=10) / len(labels)
        # Stratified: each class share within 1 sample of the full-set share.
        assert np.all(np.abs(share - raw_counts / 1797) <= 1.0 / len(labels) + 1e-9)


def test_fixed_seed_is_reproducible_and_seeds_differ():
    a, b, c = load_digits_split(seed=3), load_digits_split(seed=3), load_digits_split(seed=4)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


@pytest.mark.parametrize("kwargs, argument", [
    ({"test_size": 0.0}, "test_size"),
    ({"test_size": 1.0}, "test_size"),
    ({"val_size": 0.8}, "val_size"),
    ({"value_range": (-2.0, 2.0)}, "value_range"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        load_digits_split(**kwargs)
