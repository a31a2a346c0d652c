"""The dataset type every loader returns, and its plain-array form (for the cache)."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # uint8 (N, H, W, 3)
    y_train: np.ndarray  # int32 (N,)
    x_test: np.ndarray   # uint8 (M, H, W, 3)
    y_test: np.ndarray   # int32 (M,)
    num_classes: int
    class_names: tuple   # of str, len num_classes
    # None: the usual one-class protocol, a test image is normal iff its label is the
    # normal class. Else (M,) bool, for datasets whose test images are labelled normal or
    # anomalous within their class (MVTecAD's categories, Head-CT, ISIC, a user's folder):
    # class c's test set is its own test images, the anomalous ones novel.
    test_anomalous: np.ndarray | None = None


class DatasetNotFoundError(FileNotFoundError):
    """The requested data is not on disk (and may not be fetched)."""


def dataset_to_arrays(ds) -> dict:
    """A Dataset as a dict of plain arrays (no pickling needed)."""
    out = dict(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
               y_test=ds.y_test, name=np.str_(ds.name),
               num_classes=np.int64(ds.num_classes),
               class_names=np.array(ds.class_names, dtype=np.str_))
    if ds.test_anomalous is not None:
        out['test_anomalous'] = np.asarray(ds.test_anomalous, bool)
    return out


def dataset_from_arrays(d: dict):
    """The Dataset that dataset_to_arrays stored as `d`."""
    anomalous = d.get('test_anomalous')
    return Dataset(
        str(d['name']), d['x_train'], d['y_train'], d['x_test'], d['y_test'],
        int(d['num_classes']), tuple(str(c) for c in d['class_names']),
        None if anomalous is None else np.asarray(anomalous, bool))
