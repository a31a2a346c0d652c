"""The bundled datasets and a user's arrays, as uint8 numpy arrays at their own size
(registry.load_dataset brings them to 3 channels at data.image_size), and the outlier
exposure file.

  * 'digits'  -- scikit-learn's bundled 8x8 handwritten digits; no network or
                 files needed, which makes it the offline smoke-test dataset.
  * 'faces'   -- scikit-image's bundled lfw_subset: 100 25x25 faces (Labeled Faces
                 in the Wild) and 100 non-face patches of natural images; class 0 =
                 face, 1 = non-face; offline, a second real dataset for ablations.
  * 'textures' -- patches of scikit-image's bundled textures, in textures.py.
  * 'arrays'  -- a user's .npz file, read without pickle.
"""
from __future__ import annotations

import pathlib

import numpy as np

from unode_jax.data.prepare import to_rgb
from unode_jax.data.types import Dataset, DatasetNotFoundError

# Fraction of the 1,797 digits images kept for training (stratified, seeded).
DIGITS_TRAIN_FRACTION = 2 / 3
DIGITS_SPLIT_SEED = 0
FACES_TRAIN_FRACTION = 0.7  # 70 + 70 training images, 30 + 30 test images.


# --------------------------------------------------------------------- digits


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()  # bundled with scikit-learn: no download
    # Values are 0..16 (counts of set pixels in 4x4 blocks); stretch to 0..255.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, train_size=DIGITS_TRAIN_FRACTION, stratify=labels,
        random_state=DIGITS_SPLIT_SEED)
    return Dataset('digits', x_tr, y_tr, x_te, y_te, 10,
                   tuple(str(i) for i in range(10)))


def load_faces() -> Dataset:
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise DatasetNotFoundError("data.name='faces' reads scikit-image's bundled lfw_subset: "
                                   'pip install scikit-image') from None
    from sklearn.model_selection import train_test_split

    images = np.rint(lfw_subset() * 255.0).astype(np.uint8)  # (200, 25, 25) in [0, 1]
    labels = (np.arange(len(images)) >= 100).astype(np.int32)  # first 100 are faces
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, train_size=FACES_TRAIN_FRACTION, stratify=labels,
        random_state=DIGITS_SPLIT_SEED)
    return Dataset('faces', x_tr, y_tr, x_te, y_te, 2, ('face', 'non_face'))


# --------------------------------------------------------------------- arrays

_NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
_ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')  # numpy.savez writes a zip archive


def _require_npz(path):
    """A file that is not a zip archive is refused as not a .npz, before numpy reads it (it
    would call a text file 'pickled data')."""
    with open(path, 'rb') as f:
        head = f.read(4)
    if head not in _ZIP_MAGIC:
        raise ValueError(f'{path}: not a .npz file (numpy.savez writes a zip archive; this '
                         f'file starts with {head!r})')


def load_arrays(path) -> Dataset:
    if path is None:
        raise ValueError("dataset 'arrays' needs path=<file.npz> with keys "
                         f'{", ".join(_NPZ_KEYS)}')
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f'arrays dataset file not found: {path}')
    _require_npz(path)
    # allow_pickle=False: the file is untrusted, and unpickling object arrays
    # can run arbitrary code. numpy then refuses object arrays with ValueError.
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise ValueError(f'{path}: missing key(s) {missing}; '
                                 f'found {npz.files}')
            arrays = {k: npz[k] for k in _NPZ_KEYS}
    except ValueError as e:
        if 'allow_pickle' in str(e):
            raise ValueError(
                f'{path}: contains pickled object arrays, refused (store '
                'plain uint8 images and integer labels)') from e
        raise
    except (OSError, EOFError) as e:  # not a zip / truncated / corrupt member
        raise ValueError(f'{path}: not a readable .npz file ({e})') from e

    for split in ('train', 'test'):
        x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
        if x.dtype != np.uint8:
            raise ValueError(f'{path}: x_{split} must be uint8, got {x.dtype}')
        if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3))):
            raise ValueError(f'{path}: x_{split} must be NHW or NHWC with 1 '
                             f'or 3 channels, got shape {x.shape}')
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f'{path}: y_{split} must be a 1-D integer '
                             f'array, got {y.dtype} shape {y.shape}')
        if len(x) != len(y):
            raise ValueError(f'{path}: x_{split} has {len(x)} images but '
                             f'y_{split} has {len(y)} labels')
        if len(y) == 0:
            raise ValueError(f'{path}: {split} split is empty')
        if y.min() < 0:
            raise ValueError(f'{path}: y_{split} has negative labels '
                             f'(min {y.min()})')
        if y.max() > np.iinfo(np.int32).max - 1:
            raise ValueError(f'{path}: y_{split} label {y.max()} too large')

    num_classes = int(max(arrays['y_train'].max(), arrays['y_test'].max())) + 1
    return Dataset(
        'arrays', arrays['x_train'], arrays['y_train'].astype(np.int32),
        arrays['x_test'], arrays['y_test'].astype(np.int32), num_classes,
        tuple(str(i) for i in range(num_classes)))


# ------------------------------------------------------------------- outliers


def load_outliers(path, image_size: int) -> np.ndarray:
    """External images for outlier exposure: a .npz with key 'x' (uint8 NHW or NHWC).

    Returned as uint8 NHWC with 3 channels at image_size^2. Like 'arrays', the
    file is untrusted and read without pickle.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(
            f'outlier file not found: {path} (a .npz with key "x", uint8 images)')
    _require_npz(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if 'x' not in npz.files:
                raise ValueError(f'{path}: needs key "x"; found {npz.files}')
            x = npz['x']
    except (OSError, EOFError) as e:
        raise ValueError(f'{path}: not a readable .npz file ({e})') from e
    if x.dtype != np.uint8 or not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3))):
        raise ValueError(f'{path}: x must be uint8 NHW or NHWC (1 or 3 channels), '
                         f'got {x.dtype} {x.shape}')
    if len(x) == 0:
        raise ValueError(f'{path}: x is empty')
    return to_rgb(x, image_size)
