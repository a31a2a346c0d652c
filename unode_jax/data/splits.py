"""One-class protocol: train on a single "normal" class, test on everything."""
from __future__ import annotations

import numpy as np

from unode_jax.data.datasets import Dataset


def one_class_split(ds: Dataset, normal_class: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (x_train_normal uint8, x_test uint8, test_is_normal bool).

    x_test is all of `ds.x_test` (the same array, not a copy); every test
    image of another class counts as novel. Class out of range -> ValueError
    naming the valid range; a class with no training images -> ValueError.
    """
    if (isinstance(normal_class, bool)
            or not isinstance(normal_class, (int, np.integer))
            or not 0 <= normal_class < ds.num_classes):
        raise ValueError(
            f'normal_class must be an int in 0..{ds.num_classes - 1} for '
            f'{ds.name}, got {normal_class!r}')
    is_normal_train = ds.y_train == normal_class
    if not is_normal_train.any():
        raise ValueError(
            f'{ds.name}: class {normal_class} '
            f'({ds.class_names[normal_class]}) has no training images')
    return ds.x_train[is_normal_train], ds.x_test, ds.y_test == normal_class
