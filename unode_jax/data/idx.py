"""MNIST-format idx files (MNIST, Fashion-MNIST, KMNIST, EMNIST ship this way), read from a
folder without TensorFlow or tfds: `data.name=fashion_mnist --config.data.path=DIR`.

A folder holds the four files of the original distribution, gzipped or not:

  train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
  t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

(Debian's `apt-get install dataset-fashion-mnist` puts Fashion-MNIST's in
/usr/share/datasets/fashion-mnist/.) The idx format: two zero bytes, a type byte (0x08:
unsigned bytes, the only type these datasets use), the number of dimensions, each dimension
as a big-endian uint32, then the values in C order. Any other content is a one-line
ValueError naming the file.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from unode_jax.data.types import Dataset, DatasetNotFoundError

FILES = dict(x_train='train-images-idx3-ubyte', y_train='train-labels-idx1-ubyte',
             x_test='t10k-images-idx3-ubyte', y_test='t10k-labels-idx1-ubyte')
UBYTE = 0x08
_GZIP_MAGIC = b'\x1f\x8b'


def read_idx(path) -> np.ndarray:
    """The uint8 array of one idx file (plain or gzipped)."""
    with open(path, 'rb') as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f'{path}: a damaged gzip file ({e})') from None
    if len(raw) < 4 or raw[:2] != b'\0\0':
        raise ValueError(f'{path}: not an idx file (its first bytes are {raw[:4].hex()}, '
                         'an idx file starts 0000 08 and its number of dimensions)')
    if raw[2] != UBYTE:
        raise ValueError(f'{path}: idx values of type 0x{raw[2]:02x}; expected 0x08 '
                         '(unsigned bytes, as MNIST-format datasets ship)')
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f'{path}: a truncated idx header ({len(raw)} bytes, {ndim} '
                         'dimensions)')
    shape = tuple(int(v) for v in np.frombuffer(raw, '>u4', ndim, 4))
    want = int(np.prod(shape, dtype=np.int64))
    got = len(raw) - header
    if got != want:
        raise ValueError(f'{path}: {got} bytes of values where its header {shape} says '
                         f'{want} ({"truncated" if got < want else "extra bytes at the end"})')
    return np.frombuffer(raw, np.uint8, want, header).reshape(shape)


def find_files(folder) -> dict:
    """{x_train: path, ...} of the four idx files in folder (a plain file before a .gz)."""
    found, missing = {}, []
    for key, stem in FILES.items():
        for name in (stem, stem + '.gz'):
            if os.path.isfile(os.path.join(folder, name)):
                found[key] = os.path.join(folder, name)
                break
        else:
            missing.append(stem + '[.gz]')
    if missing:
        where = folder if os.path.isdir(folder) else f'{folder} (no such folder)'
        raise DatasetNotFoundError(f'{", ".join(missing)} not found in {where}: an idx '
                                   f'folder holds the four files {", ".join(FILES.values())} '
                                   '(each may be gzipped)')
    return found


def load_idx_folder(name: str, folder, class_names: tuple) -> Dataset:
    """The dataset in an idx folder: gray uint8 images at their own size, int32 labels."""
    paths = find_files(os.fspath(folder))
    a = {key: read_idx(path) for key, path in paths.items()}
    for split in ('train', 'test'):
        x, y = a[f'x_{split}'], a[f'y_{split}']
        xp, yp = paths[f'x_{split}'], paths[f'y_{split}']
        if x.ndim != 3 or y.ndim != 1:
            raise ValueError(f'{xp if x.ndim != 3 else yp}: expected images (N, H, W) and '
                             f'labels (N,), got {x.shape} and {y.shape}')
        if len(x) != len(y):
            raise ValueError(f'{xp} has {len(x)} images but {yp} has {len(y)} labels')
        if len(y) and y.max() >= len(class_names):
            raise ValueError(f'{yp}: label {int(y.max())}, expected 0..{len(class_names) - 1} '
                             f'({name} has {len(class_names)} classes)')
    if a['x_train'].shape[1:] != a['x_test'].shape[1:]:
        raise ValueError(f'{paths["x_train"]} holds {a["x_train"].shape[1:]} images, '
                         f'{paths["x_test"]} {a["x_test"].shape[1:]}')
    return Dataset(name, a['x_train'], a['y_train'].astype(np.int32), a['x_test'],
                   a['y_test'].astype(np.int32), len(class_names), tuple(class_names))
