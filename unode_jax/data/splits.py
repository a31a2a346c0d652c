"""One-class protocol: train on a single "normal" class, test on everything."""
from __future__ import annotations

import numpy as np

from unode_jax.data.types import Dataset


def one_class_split(ds: Dataset, normal_class: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (x_train_normal uint8, x_test uint8, test_is_normal bool).

    x_test is all of `ds.x_test` (the same array, not a copy), every test image of
    another class counting as novel; or, for a dataset with test_anomalous, the class's
    own test images, the anomalous ones novel. Class out of range -> ValueError
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
    mask, is_normal = one_class_test(ds.y_test, ds.test_anomalous, normal_class)
    return ds.x_train[is_normal_train], (ds.x_test if mask is None else ds.x_test[mask]), \
        is_normal


def one_class_test(y_test, test_anomalous, normal_class):
    """-> (which test images class normal_class is tested on, None = all; is_normal of those).

    Without test_anomalous every test image counts, normal iff of the normal class; with
    it (see Dataset.test_anomalous) only the class's own test images, normal iff not
    anomalous.
    """
    if test_anomalous is None:
        return None, y_test == normal_class
    mask = y_test == normal_class
    return mask, ~test_anomalous[mask]


def multiclass_split(ds: Dataset, inlier_classes=()
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Multi-class protocol (Table 3): the inliers are every class of ds, or those listed.

    -> (x_train uint8, labels int32 in 0..K-1 (inlier_classes order), x_test of the
    inlier classes, x_test of the other classes (empty when all are inliers)).
    """
    if ds.test_anomalous is not None:
        raise ValueError(f'{ds.name} labels its test images normal/anomalous per class: the '
                         "multi-class settings need a dataset labelled by class")
    classes = tuple(int(c) for c in inlier_classes) or tuple(range(ds.num_classes))
    bad = [c for c in classes if not 0 <= c < ds.num_classes]
    if bad or len(set(classes)) != len(classes):
        raise ValueError(f'inlier_classes must be distinct ints in 0..{ds.num_classes - 1} '
                         f'for {ds.name}, got {tuple(inlier_classes)}')
    remap = np.full(ds.num_classes, -1, np.int32)
    remap[list(classes)] = np.arange(len(classes), dtype=np.int32)
    labels = remap[ds.y_train]
    keep = labels >= 0
    missing = [c for c in classes if not np.any(ds.y_train == c)]
    if missing:
        raise ValueError(f'{ds.name}: inlier class(es) {missing} have no training images')
    test_in = remap[ds.y_test] >= 0
    return ds.x_train[keep], labels[keep], ds.x_test[test_in], ds.x_test[~test_in]


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (fit, holdout) index arrays: a seeded `fraction` of n training images held out.

    The held-out images are never trained on; their scores fit predict's threshold.
    fraction = 0 (the paper's protocol) holds out nothing.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f'holdout fraction must be in [0, 1), got {fraction}')
    n_hold = int(round(fraction * n)) if fraction > 0 else 0
    n_hold = max(n_hold, 1) if fraction > 0 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])
