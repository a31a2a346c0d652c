"""tfds datasets (CIFAR, MNIST, SVHN, EMNIST, ...) as uint8 arrays: read from a prepared
folder through `builder.as_data_source` (array_record, no TensorFlow needed), prepared
first when allowed (TensorFlow and the internet), through the prepared-array cache."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import socket
import string

import numpy as np

from unode_jax.data import cache as C
from unode_jax.data.prepare import to_rgb
from unode_jax.data.types import (Dataset, DatasetNotFoundError, dataset_from_arrays,
                                  dataset_to_arrays)

# Preparing a tfds dataset needs TensorFlow: requirements-tfds.txt pins it together with
# requirements.txt (pip-compile of requirements-tfds.in, requirements.txt as constraints).
TENSORFLOW_INSTALL = 'pip install -r requirements-tfds.txt'
ONLINE_PROBE = ('storage.googleapis.com', 443)  # Where tfds' own files come from.
# Records fetched per `__getitems__` call: batched array_record reads are ~8x
# faster than one `src[i]` per record, chunks bound the decoded-dict memory.
_READ_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    tfds_name: str
    label_key: str
    label_offset: int = 0      # subtracted so labels start at 0
    transpose: bool = False    # swap H and W of the stored images
    class_names: tuple | None = None  # overrides the builder's label names


EMNIST_LETTERS = TfdsSpec(
    'emnist/letters', 'label', label_offset=1, transpose=True,
    # Labels 1..26 are the letters a..z, upper and lower case merged.
    class_names=tuple(string.ascii_uppercase))


# ----------------------------------------------------------------------- tfds


def prepared_builder(name: str, tfds_name: str, *, data_dir, download: bool):
    """The tfds builder of `tfds_name`, prepared in data_dir (default: tfds's).

    Fails fast with DatasetNotFoundError when the prepared data is missing
    and download is False; prepares it as array_record when download is True.
    """
    import tensorflow_datasets as tfds

    if data_dir is None:
        data_dir = tfds.core.constants.get_default_data_dir()
    data_dir = pathlib.Path(data_dir).expanduser()
    # Only builds the object (name, version, features); reads nothing yet.
    builder = tfds.builder(tfds_name, data_dir=os.fspath(data_dir))
    full_name = builder.info.full_name  # e.g. 'emnist/letters/3.1.0'
    # Checked here, against the caller's data_dir, because tfds would
    # otherwise start a download (retrying for minutes offline) or fail with
    # a long trace.
    version_dir = data_dir / full_name
    if not (version_dir / 'dataset_info.json').is_file():
        if not download:
            others = (sorted(p.name for p in version_dir.parent.iterdir())
                      if version_dir.parent.is_dir() else [])
            found = (f' (found other versions: {", ".join(others)})'
                     if others else '')
            raise DatasetNotFoundError(
                f'{name}: no prepared TFDS dataset {full_name} in {data_dir}'
                f'{found}; copy a prepared {full_name}/ folder there, or '
                'rerun with --config.data.download=True on a machine with '
                'internet and tensorflow installed')
        if not have_tensorflow():
            raise DatasetNotFoundError(
                f'{name}: preparing {full_name} needs TensorFlow: {TENSORFLOW_INSTALL} '
                f'(or copy a prepared {full_name}/ folder into {data_dir})')
        if not online():
            raise DatasetNotFoundError(
                f'{name}: no prepared {full_name} in {data_dir} and no internet to download '
                f'it ({ONLINE_PROBE[0]} unreachable): copy a prepared {full_name}/ folder '
                'there (--config.data.download=False then never tries the network)')
        # array_record: the random-access format `as_data_source` reads without
        # TensorFlow; the tfds default (tfrecord) would need tf.data to read.
        builder = tfds.builder(tfds_name, data_dir=os.fspath(data_dir),
                               file_format='array_record')
        builder.download_and_prepare(file_format='array_record')
    return builder


def have_tensorflow():
    return importlib.util.find_spec('tensorflow') is not None


def online(timeout=5.0):
    """Whether the internet answers, in seconds (tfds itself retries for minutes)."""
    try:
        socket.create_connection(ONLINE_PROBE, timeout=timeout).close()
        return True
    except OSError:
        return False


def data_sources(name: str, builder, splits: list) -> list:
    """`builder.as_data_source` of each split; a clear error if not array_record."""
    try:
        return builder.as_data_source(split=splits)
    except NotImplementedError as e:  # prepared as tfrecord only
        version_dir = pathlib.Path(builder.data_dir)
        raise DatasetNotFoundError(
            f'{name}: {version_dir} has no array_record files (prepared as '
            f'{builder.info.file_format}); convert it with `tfds '
            f'convert_format --dataset_version_dir={version_dir} '
            '--out_file_format=array_record` or prepare it into an empty '
            'data_dir') from e


# Part of the tfds cache key: bump when the preparation of the arrays (reading,
# label mapping, to_rgb, resize_bilinear) changes, so old cache files are unused.
TFDS_CACHE_VERSION = 1


def tfds_full_name(tfds_name: str) -> str:
    """The 'name[/config]/version' that tfds.builder(tfds_name) would use.

    Taken from the builder class and its configs alone: constructing the
    builder reads the prepared dataset_info.json, part of the tfds work a cache
    hit skips (tests check this against tfds.builder).
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.dataset_builder import (
        canonical_version_for_config)

    base, _, config = tfds_name.partition('/')
    cls = tfds.builder_cls(base)
    if config:
        cfg = cls.builder_configs[config]
    elif cls.BUILDER_CONFIGS:  # tfds's default: the named one, else the first
        cfg = (cls.builder_configs[cls.DEFAULT_BUILDER_CONFIG_NAME]
               if cls.DEFAULT_BUILDER_CONFIG_NAME else cls.BUILDER_CONFIGS[0])
    else:
        cfg = None
    version = canonical_version_for_config(cls, cfg)
    return '/'.join([cls.name] + ([cfg.name] if cfg else []) + [str(version)])


def cached_tfds_arrays(name: str, tfds_name: str, *, data_dir, download: bool,
                       settings: dict, build, cache_dir=None, cache: bool = True) -> dict:
    """build(builder) -> dict of arrays, through the prepared-array cache.

    The cache key fingerprints the prepared version folder (dataset_info.json
    and the record files) beside `settings` (everything else the arrays depend
    on), so re-preparing or replacing it rebuilds; a hit reads one .npz and
    constructs no tfds builder at all.
    """
    if data_dir is None:
        import tensorflow_datasets as tfds
        data_dir = tfds.core.constants.get_default_data_dir()
    data_dir = pathlib.Path(os.path.abspath(pathlib.Path(data_dir).expanduser()))
    full_name = tfds_full_name(tfds_name)
    version_dir = data_dir / full_name
    if not (version_dir / 'dataset_info.json').is_file():
        # Fails fast with DatasetNotFoundError, or prepares it (download=True):
        # either way before the fingerprint, which needs the folder.
        prepared_builder(name, tfds_name, data_dir=data_dir, download=download)
    key = dict(kind='tfds', version=TFDS_CACHE_VERSION, name=name,
               builder=full_name, data_dir=os.fspath(data_dir),
               files=C.file_fingerprint([version_dir], root=version_dir), **settings)

    def build_arrays():
        builder = prepared_builder(name, tfds_name, data_dir=data_dir, download=download)
        if builder.info.full_name != full_name:  # the key named another folder
            raise RuntimeError(
                f'{name}: tfds builds {builder.info.full_name}, the cache key '
                f'was computed for {full_name}')
        return build(builder)

    return C.cached_arrays(name, key, build_arrays, cache_dir=cache_dir, enabled=cache)


def load_tfds(name: str, spec: TfdsSpec, *, data_dir, download: bool,
               image_size: int, cache_dir=None, cache: bool = True
               ) -> Dataset:
    """The tfds dataset at image_size, RGB, through the prepared-array cache."""
    def build(builder):
        train_src, test_src = data_sources(name, builder, ['train', 'test'])
        label_feature = builder.info.features[spec.label_key]
        num_classes = (len(spec.class_names) if spec.class_names
                       else label_feature.num_classes)
        class_names = spec.class_names or tuple(label_feature.names)
        x_train, y_train = read_split(train_src, spec, num_classes, name)
        x_test, y_test = read_split(test_src, spec, num_classes, name)
        return dataset_to_arrays(Dataset(
            name, to_rgb(x_train, image_size), y_train,
            to_rgb(x_test, image_size), y_test, num_classes, class_names))

    settings = dict(label_key=spec.label_key, label_offset=spec.label_offset,
                    transpose=spec.transpose,
                    class_names=list(spec.class_names) if spec.class_names else None,
                    image_size=image_size)
    return dataset_from_arrays(cached_tfds_arrays(
        name, spec.tfds_name, data_dir=data_dir, download=download, settings=settings,
        build=build, cache_dir=cache_dir, cache=cache))


def read_split(src, spec: TfdsSpec, num_classes: int, name: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Reads all records of a data source -> (uint8 images, int32 labels)."""
    n = len(src)
    images = labels = None
    for start in range(0, n, _READ_CHUNK):
        keys = list(range(start, min(start + _READ_CHUNK, n)))
        for i, ex in zip(keys, src.__getitems__(keys)):
            if images is None:  # shape from the data, not the feature spec
                images = np.empty((n,) + np.shape(ex['image']), np.uint8)
                labels = np.empty((n,), np.int64)
            images[i] = ex['image']
            labels[i] = ex[spec.label_key]
    if images is None:
        raise ValueError(f'{name}: a split of {spec.tfds_name} has no records')
    if spec.transpose:
        # TFDS stores EMNIST as in the source files, i.e. transposed
        # (letters lie on their side); swapping H and W makes them upright.
        images = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    labels -= spec.label_offset
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f'{name}: labels span {labels.min() + spec.label_offset}..'
            f'{labels.max() + spec.label_offset} in {spec.tfds_name}, '
            f'expected {spec.label_offset}..'
            f'{spec.label_offset + num_classes - 1}')
    return images, labels.astype(np.int32)
