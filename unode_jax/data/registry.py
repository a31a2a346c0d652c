"""Every dataset `data.name` can name, in one table (`DATASETS`), and `load_data`, the
pipeline's way in: config.data -> a `Dataset` of uint8 NHWC RGB images at data.image_size.

  kind     where the images come from                                 data.path
  bundled  a pip package (scikit-learn's digits, scikit-image's faces and textures)  -
  tfds     a prepared TFDS folder (data.data_dir; data.download=True prepares it)  -, or
           for MNIST-format datasets (mnist, fashion_mnist) a folder of idx files (idx.py)
  file     a user's .npz with x_train, y_train, x_test, y_test       FILE.npz
  folder   an image folder in its publisher's layout (folders.py)     its root

A new dataset is one row here and its loader in the module of its kind.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Callable

import numpy as np

from unode_jax.data import datasets, folders, folders_medical, idx, textures
from unode_jax.data.prepare import to_rgb
from unode_jax.data.tfds_loaders import EMNIST_LETTERS, TfdsSpec, load_tfds
from unode_jax.data.types import Dataset
from unode_jax.runtime import hosts

KINDS = ('bundled', 'tfds', 'file', 'folder')
SKIPPED_FILE = 'skipped_images.csv'  # A folder dataset's unreadable images, in the workdir.


def _no_args(d, seed):
    return {}


@dataclasses.dataclass(frozen=True)
class Source:
    """How one data.name is read.

    kind: one of KINDS. loader: bundled `loader()`, file `loader(path)`, folder
    `loader(root, image_size=, resize=, strict=, progress=, **args(d, seed))` returning
    (Dataset, {path: reason} of skipped files). tfds: `cifar100_coarse -> TfdsSpec`.
    args: a folder loader's own arguments, from config.data and config.seed.
    idx_classes: the class names of a tfds dataset that also reads from a folder of
    MNIST-format idx files (data.path), in label order.
    """
    kind: str
    loader: Callable | None = None
    tfds: Callable | None = None
    args: Callable = _no_args
    idx_classes: tuple | None = None


def _tfds(tfds_name, idx_classes=None):
    return Source('tfds', tfds=lambda coarse: TfdsSpec(tfds_name, 'label'),
                  idx_classes=idx_classes)


FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot')  # tfds's label names


DATASETS = {
    'digits': Source('bundled', datasets.load_digits),
    'faces': Source('bundled', datasets.load_faces),
    'textures': Source('bundled', textures.load_textures),
    'cifar10': _tfds('cifar10'),
    'cifar100': Source('tfds', tfds=lambda coarse: TfdsSpec(
        'cifar100', 'coarse_label' if coarse else 'label')),
    'mnist': _tfds('mnist', tuple(str(i) for i in range(10))),
    'fashion_mnist': _tfds('fashion_mnist', FASHION_MNIST_CLASSES),
    'emnist_letters': Source('tfds', tfds=lambda coarse: EMNIST_LETTERS),
    'svhn': _tfds('svhn_cropped'),
    'arrays': Source('file', datasets.load_arrays),
    'mvtec': Source('folder', folders.load_mvtec,
                    args=lambda d, seed: dict(categories=tuple(d.categories))),
    'head_ct': Source('folder', folders_medical.load_head_ct,
                      args=lambda d, seed: dict(seed=seed)),
    'isic2018': Source('folder', folders_medical.load_isic2018,
                       args=lambda d, seed: dict(holdout_fraction=d.isic_holdout, seed=seed)),
    'fgvc_aircraft': Source('folder', folders.load_fgvc_aircraft),
    'imagenet30': Source('folder', folders.load_imagenet30),
    'folder': Source('folder', folders.load_folder,
                     args=lambda d, seed: dict(anomaly_dirs=tuple(d.anomaly_dirs))),
}


def names(*kinds):
    """The dataset names of these kinds (all of them without arguments)."""
    return tuple(n for n, s in DATASETS.items() if not kinds or s.kind in kinds)


def names_with_idx():
    """The dataset names that read a folder of idx files given data.path."""
    return tuple(n for n, s in DATASETS.items() if s.idx_classes is not None)


def load_dataset(name: str, *, data_dir=None, download: bool = False, image_size: int = 32,
                 path=None, cifar100_coarse: bool = True, cache_dir=None,
                 cache: bool = True) -> Dataset:
    """Loads `name` (a bundled, tfds or file dataset) as uint8 NHWC, 3 channels, image_size^2.

    Args:
      name: a name of DATASETS other than the folder ones (see load_folder_dataset).
      data_dir: TFDS data dir; None -> $TFDS_DATA_DIR or ~/tensorflow_datasets.
      download: for TFDS datasets only: if the prepared data is missing, download and
        prepare it (needs internet and TensorFlow); offline it fails within seconds.
      image_size: output height and width (bilinear resize when different).
      path: the .npz file for name='arrays'; for mnist and fashion_mnist, a folder of
        their idx files, read instead of tfds (idx.py).
      cifar100_coarse: CIFAR-100 labels are the 20 superclasses if True, else the 100
        fine classes.
      cache_dir, cache: for TFDS datasets, the prepared-array cache (data/cache.py):
        None -> $UNODE_JAX_CACHE or ~/.cache/unode_jax/arrays; cache=False reads the
        TFDS records every time.

    Raises:
      DatasetNotFoundError: the data is not on disk (and download is False).
      ValueError: unknown name, bad argument or malformed .npz content.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f'image_size must be a positive int, got {image_size!r}')
    source = DATASETS.get(name)
    if source is None or source.kind == 'folder':
        raise ValueError(f'unknown dataset {name!r}; expected one of '
                         f'{names("bundled", "tfds", "file")}')
    if source.kind == 'tfds' and path:
        if source.idx_classes is None:
            raise ValueError(f'data.path is not read for data.name={name!r} (a tfds dataset; '
                             f'idx folders: {names_with_idx()})')
        ds = idx.load_idx_folder(name, path, source.idx_classes)
    elif source.kind == 'tfds':  # Already at image_size with 3 channels.
        return load_tfds(name, source.tfds(cifar100_coarse), data_dir=data_dir,
                         download=download, image_size=int(image_size), cache_dir=cache_dir,
                         cache=cache)
    else:
        ds = source.loader(path) if source.kind == 'file' else source.loader()
    return dataclasses.replace(ds, x_train=to_rgb(ds.x_train, image_size),
                               x_test=to_rgb(ds.x_test, image_size))


def load_folder_dataset(name: str, root, *, cache: bool = True, cache_dir=None, log=print,
                        **kwargs) -> tuple[Dataset, dict[str, str]]:
    """Loads folder dataset `name` from root -> (Dataset, {path: reason} of skipped files).

    Every loader takes image_size (required), resize, strict and progress; the others
    (mvtec categories, head_ct seed, ...) are in each loader's signature. cache=True keeps
    the prepared arrays in the array cache (folders.load_cached).
    """
    source = DATASETS.get(name)
    if source is None or source.kind != 'folder':
        raise ValueError(f'unknown folder dataset {name!r}; expected one of '
                         f'{names("folder")}')
    return folders.load_cached(name, source.loader, root, cache=cache, cache_dir=cache_dir,
                               log=log, **kwargs)


def load_data(config, workdir=None) -> Dataset:
    """The dataset config.data names. Skipped unreadable images of a folder dataset are
    counted on stdout and listed in <workdir>/skipped_images.csv (path, reason)."""
    d = config.data
    source = DATASETS[d.name]
    if source.kind != 'folder':
        return load_dataset(d.name, data_dir=d.data_dir, download=d.download,
                            image_size=d.image_size, path=d.path,
                            cifar100_coarse=d.cifar100_coarse, cache_dir=d.cache_dir,
                            cache=d.cache)
    ds, errors = load_folder_dataset(d.name, d.path, image_size=d.image_size, resize=d.resize,
                                     strict=d.strict, progress=config.progress_bar,
                                     cache=d.cache, cache_dir=d.cache_dir,
                                     **source.args(d, config.seed))
    if errors and hosts.is_writer():
        _report_skipped(d.name, errors, workdir)
    return ds


def _report_skipped(name, errors, workdir):
    where = None
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        where = os.path.join(workdir, SKIPPED_FILE)
        # A file name that is not UTF-8 is written as its bytes.
        with open(where, 'w', newline='', encoding='utf-8', errors='surrogateescape') as f:
            writer = csv.writer(f)
            writer.writerow(['path', 'reason'])
            writer.writerows(errors.items())
    first = next(iter(errors))
    print(f'{name}: skipped {len(errors)} unreadable image(s)'
          + (f', listed in {where}' if where is not None else '')
          + f' (first: {first!r}: {errors[first]}); '
          '--config.data.strict=True stops instead', flush=True)
