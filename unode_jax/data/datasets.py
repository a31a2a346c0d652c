"""Image datasets for one-class novelty detection, as uint8 NHWC numpy arrays.

Every loader returns 3-channel uint8 images of `image_size` x `image_size`,
so the rest of the pipeline never branches on the source dataset.

Sources:
  * 'digits'  -- scikit-learn's bundled 8x8 handwritten digits; no network or
                 files needed, which makes it the offline smoke-test dataset.
  * 'faces'   -- scikit-image's bundled lfw_subset: 100 25x25 faces (Labeled Faces
                 in the Wild) and 100 non-face patches of natural images; class 0 =
                 face, 1 = non-face; offline, a second real dataset for ablations.
  * tfds names -- read from an already prepared TFDS folder through
                 `builder.as_data_source` (array_record, no TensorFlow needed).
  * 'arrays'  -- a user's .npz file.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import socket
import string

import numpy as np

DATASETS = ('digits', 'faces', 'cifar10', 'cifar100', 'mnist', 'fashion_mnist',
            'emnist_letters', 'svhn', 'arrays')

# Fraction of the 1,797 digits images kept for training (stratified, seeded).
# Preparing a tfds dataset needs TensorFlow: this version resolves against requirements.txt
# (pip-compile of tensorflow-cpu with requirements.txt as constraints).
TENSORFLOW_PIN = 'tensorflow-cpu==2.21.0'
ONLINE_PROBE = ('storage.googleapis.com', 443)  # Where tfds' own files come from.
DIGITS_TRAIN_FRACTION = 2 / 3
DIGITS_SPLIT_SEED = 0
FACES_TRAIN_FRACTION = 0.7  # 70 + 70 training images, 30 + 30 test images.

# Records fetched per `__getitems__` call: batched array_record reads are ~8x
# faster than one `src[i]` per record, chunks bound the decoded-dict memory.
_READ_CHUNK = 4096
# Images resized per matmul chunk: bounds the float32 intermediates.
_RESIZE_CHUNK = 4096


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


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    tfds_name: str
    label_key: str
    label_offset: int = 0      # subtracted so labels start at 0
    transpose: bool = False    # swap H and W of the stored images
    class_names: tuple | None = None  # overrides the builder's label names


_EMNIST_LETTERS = _TfdsSpec(
    'emnist/letters', 'label', label_offset=1, transpose=True,
    # Labels 1..26 are the letters a..z, upper and lower case merged.
    class_names=tuple(string.ascii_uppercase))


def _tfds_spec(name: str, cifar100_coarse: bool) -> _TfdsSpec:
    if name == 'cifar100':
        return _TfdsSpec('cifar100',
                         'coarse_label' if cifar100_coarse else 'label')
    if name == 'emnist_letters':
        return _EMNIST_LETTERS
    return _TfdsSpec({'svhn': 'svhn_cropped'}.get(name, name), 'label')


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None,
                 download: bool = False, image_size: int = 32,
                 path: str | os.PathLike | None = None,
                 cifar100_coarse: bool = True, cache_dir=None,
                 cache: bool = True) -> Dataset:
    """Loads `name` (one of DATASETS) as uint8 NHWC, 3 channels, image_size^2.

    Args:
      name: dataset name, see DATASETS.
      data_dir: TFDS data dir; None -> $TFDS_DATA_DIR or ~/tensorflow_datasets.
      download: for TFDS datasets only: if the prepared data is missing,
        download and prepare it (needs internet and TensorFlow). With no
        network tfds retries for minutes before failing: hence the False
        default.
      image_size: output height and width (bilinear resize when different).
      path: the .npz file for name='arrays'.
      cifar100_coarse: CIFAR-100 labels are the 20 superclasses if True, else
        the 100 fine classes.
      cache_dir: for TFDS datasets: folder of the prepared-array cache (see
        unode_jax.data.cache); None -> $UNODE_JAX_CACHE or
        ~/.cache/unode_jax/arrays.
      cache: for TFDS datasets: read the final arrays from the cache when
        the prepared TFDS files and settings are unchanged, and write them
        there after a read; False reads the TFDS records every time.

    Raises:
      DatasetNotFoundError: the data is not on disk (and download is False).
      ValueError: unknown name, bad argument or malformed .npz content.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(
            f'image_size must be a positive int, got {image_size!r}')
    if name == 'digits':
        ds = _load_digits()
    elif name == 'faces':
        ds = _load_faces()
    elif name == 'arrays':
        ds = _load_arrays(path)
    elif name in DATASETS:
        # Already at image_size with 3 channels: the _to_rgb below copies
        # nothing.
        ds = _load_tfds(name, _tfds_spec(name, cifar100_coarse),
                        data_dir=data_dir, download=download,
                        image_size=int(image_size), cache_dir=cache_dir,
                        cache=cache)
    else:
        raise ValueError(
            f'unknown dataset {name!r}; expected one of {DATASETS}')
    return dataclasses.replace(
        ds, x_train=_to_rgb(ds.x_train, image_size),
        x_test=_to_rgb(ds.x_test, image_size))


# --------------------------------------------------------------------- digits


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # bundled with scikit-learn: no download
    # Values are 0..16 (counts of set pixels in 4x4 blocks); stretch to 0..255.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, train_size=DIGITS_TRAIN_FRACTION, stratify=labels,
        random_state=DIGITS_SPLIT_SEED)
    return Dataset('digits', x_tr, y_tr, x_te, y_te, 10,
                   tuple(str(i) for i in range(10)))


def _load_faces() -> Dataset:
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


def _load_arrays(path) -> Dataset:
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


# ----------------------------------------------------------------------- tfds


def _prepared_builder(name: str, tfds_name: str, *, data_dir, download: bool):
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
        if not _have_tensorflow():
            raise DatasetNotFoundError(
                f'{name}: preparing {full_name} needs TensorFlow: pip install '
                f'{TENSORFLOW_PIN} (or copy a prepared {full_name}/ folder into {data_dir})')
        if not _online():
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


def _have_tensorflow():
    return importlib.util.find_spec('tensorflow') is not None


def _online(timeout=5.0):
    """Whether the internet answers, in seconds (tfds itself retries for minutes)."""
    try:
        socket.create_connection(ONLINE_PROBE, timeout=timeout).close()
        return True
    except OSError:
        return False


def _data_sources(name: str, builder, splits: list) -> list:
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
# label mapping, _to_rgb, resize_bilinear) changes, so old cache files are unused.
_TFDS_CACHE_VERSION = 1


def _tfds_full_name(tfds_name: str) -> str:
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
    from unode_jax.data import cache as C

    if data_dir is None:
        import tensorflow_datasets as tfds
        data_dir = tfds.core.constants.get_default_data_dir()
    data_dir = pathlib.Path(os.path.abspath(pathlib.Path(data_dir).expanduser()))
    full_name = _tfds_full_name(tfds_name)
    version_dir = data_dir / full_name
    if not (version_dir / 'dataset_info.json').is_file():
        # Fails fast with DatasetNotFoundError, or prepares it (download=True):
        # either way before the fingerprint, which needs the folder.
        _prepared_builder(name, tfds_name, data_dir=data_dir, download=download)
    key = dict(kind='tfds', version=_TFDS_CACHE_VERSION, name=name,
               builder=full_name, data_dir=os.fspath(data_dir),
               files=C.file_fingerprint([version_dir], root=version_dir), **settings)

    def build_arrays():
        builder = _prepared_builder(name, tfds_name, data_dir=data_dir, download=download)
        if builder.info.full_name != full_name:  # the key named another folder
            raise RuntimeError(
                f'{name}: tfds builds {builder.info.full_name}, the cache key '
                f'was computed for {full_name}')
        return build(builder)

    return C.cached_arrays(name, key, build_arrays, cache_dir=cache_dir, enabled=cache)


def _load_tfds(name: str, spec: _TfdsSpec, *, data_dir, download: bool,
               image_size: int, cache_dir=None, cache: bool = True
               ) -> Dataset:
    """The tfds dataset at image_size, RGB, through the prepared-array cache."""
    from unode_jax.data import cache as C

    def build(builder):
        train_src, test_src = _data_sources(name, builder, ['train', 'test'])
        label_feature = builder.info.features[spec.label_key]
        num_classes = (len(spec.class_names) if spec.class_names
                       else label_feature.num_classes)
        class_names = spec.class_names or tuple(label_feature.names)
        x_train, y_train = _read_split(train_src, spec, num_classes, name)
        x_test, y_test = _read_split(test_src, spec, num_classes, name)
        return C.dataset_to_arrays(Dataset(
            name, _to_rgb(x_train, image_size), y_train,
            _to_rgb(x_test, image_size), y_test, num_classes, class_names))

    settings = dict(label_key=spec.label_key, label_offset=spec.label_offset,
                    transpose=spec.transpose,
                    class_names=list(spec.class_names) if spec.class_names else None,
                    image_size=image_size)
    return C.dataset_from_arrays(cached_tfds_arrays(
        name, spec.tfds_name, data_dir=data_dir, download=download, settings=settings,
        build=build, cache_dir=cache_dir, cache=cache))


def _read_split(src, spec: _TfdsSpec, num_classes: int, name: str
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


# -------------------------------------------------------------------- images


def _to_rgb(x: np.ndarray, size: int) -> np.ndarray:
    """NHW / NHWC (1 or 3 channels) uint8 -> NHWC uint8, 3 channels, size^2."""
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:3] != (size, size):
        # Resize before replicating gray channels: 3x less work.
        x = resize_bilinear(x, size, size)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def _linear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of triangle-filter weights, half-pixel centres.

    Same filter as PIL's BILINEAR (and jax.image.resize 'linear' with
    antialias): the triangle widens by in/out when shrinking, so downsampling
    averages instead of aliasing. Rows are renormalised at the borders.
    """
    scale = in_size / out_size
    width = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    dist = (np.arange(in_size) + 0.5)[None, :] - centres[:, None]
    w = np.maximum(0.0, 1.0 - np.abs(dist) / width)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 NHWC images -> uint8 (N, height, width, C).

    Separable resize as two small matmuls per chunk in numpy: the whole
    60k-image set takes about a second on CPU, with no per-image Python loop,
    no XLA compile per shape and nothing put on the accelerator.
    """
    n, h, w, c = x.shape
    wh = _linear_weights(h, height)             # (height, h)
    ww = _linear_weights(w, width)              # (width, w)
    out = np.empty((n, height, width, c), np.uint8)
    for s in range(0, n, _RESIZE_CHUNK):
        chunk = x[s:s + _RESIZE_CHUNK].astype(np.float32)
        rows = np.matmul(wh, chunk.reshape(len(chunk), h, w * c))
        cols = np.matmul(ww, rows.reshape(len(chunk), height, w, c))
        out[s:s + _RESIZE_CHUNK] = np.clip(np.rint(cols), 0, 255)
    return out


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
    return _to_rgb(x, image_size)
