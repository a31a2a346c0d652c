"""The published corrupted test sets, as read from TFDS: CIFAR-10-C and MNIST-C.

  * CIFAR-10-C (Hendrycks & Dietterich, 2019; TFDS `cifar10_corrupted`): the
    10,000 CIFAR-10 test images under each of 19 corruptions (15 benchmark + 4
    extra) at 5 severities, 1 (mild) .. 5 (strongest); one TFDS config per
    pair, `cifar10_corrupted/{corruption}_{severity}`.
  * MNIST-C (Mu & Gilmer, 2019; TFDS `mnist_corrupted`): the 10,000 MNIST test
    images under each of 15 corruptions at a single, fixed severity, plus
    'identity' (the uncorrupted images); config `mnist_corrupted/{corruption}`.

These are the TFDS versions of the authors' releases (the stored images, not
re-generated; `unode_jax.data.corruptions` re-generates corruptions instead).
Images come back as `registry.load_dataset` returns them: uint8 values exactly as
stored, 3 channels (gray replicated), bilinear-resized to image_size, and the
sets' own labels, so a one-class model of class k scores is_normal = y == k.
"""
from __future__ import annotations

import os

import numpy as np

from unode_jax.data.prepare import to_rgb
from unode_jax.data.tfds_loaders import TfdsSpec, cached_tfds_arrays, data_sources, read_split

# The corruption names of the installed tfds builders' configs, in tfds order
# (tests/test_corrupted_tfds.py checks them against tfds).
TFDS_CORRUPTIONS = {
    'cifar10': (
        'brightness', 'contrast', 'defocus_blur', 'elastic', 'fog', 'frost',
        'frosted_glass_blur', 'gaussian_blur', 'gaussian_noise',
        'impulse_noise', 'jpeg_compression', 'motion_blur', 'pixelate',
        'saturate', 'shot_noise', 'snow', 'spatter', 'speckle_noise',
        'zoom_blur'),
    'mnist': (
        'identity', 'shot_noise', 'impulse_noise', 'glass_blur', 'motion_blur',
        'shear', 'scale', 'rotate', 'brightness', 'translate', 'stripe', 'fog',
        'spatter', 'dotted_line', 'zigzag', 'canny_edges'),
}
# Valid `severity` arguments: MNIST-C has one level, passed as None.
TFDS_SEVERITIES = {'cifar10': (1, 2, 3, 4, 5), 'mnist': (None,)}

_TITLES = {'cifar10': 'CIFAR-10-C', 'mnist': 'MNIST-C'}


# corruptions.source: tfds' published sets where they exist, ours (corruptions.py) else.
CORRUPTION_SOURCES = ('auto', 'tfds', 'ours')


def corruption_source(dataset: str, source: str = 'auto') -> str:
    """'tfds' or 'ours' for config.corruptions.source: 'auto' reads the published sets
    where tfds has them (cifar10, mnist) and makes ours elsewhere."""
    if source == 'auto':
        return 'tfds' if dataset in TFDS_CORRUPTIONS else 'ours'
    return source


def tfds_corruptions(dataset: str) -> tuple[str, ...]:
    """The corruption names of `dataset`'s corrupted test set in TFDS."""
    if dataset not in TFDS_CORRUPTIONS:
        raise ValueError(
            f'no TFDS corrupted test set for {dataset!r}; datasets with one: '
            f'{", ".join(TFDS_CORRUPTIONS)}')
    return TFDS_CORRUPTIONS[dataset]


def _builder_name(dataset: str, corruption: str, severity) -> str:
    names = tfds_corruptions(dataset)
    if corruption not in names:
        raise ValueError(f'unknown {_TITLES[dataset]} corruption '
                         f'{corruption!r}; valid: {", ".join(names)}')
    if dataset == 'mnist':
        if severity is not None:
            raise ValueError(
                f'MNIST-C has a single severity level: pass severity=None, '
                f'got {severity!r}')
        return f'mnist_corrupted/{corruption}'
    # bool is an int: refused, as True would silently mean severity 1.
    if (isinstance(severity, bool) or not isinstance(severity, (int, np.integer))
            or severity not in TFDS_SEVERITIES[dataset]):
        raise ValueError(f'CIFAR-10-C severity must be one of 1, 2, 3, 4, 5, '
                         f'got {severity!r}')
    return f'cifar10_corrupted/{corruption}_{int(severity)}'


def load_corrupted_test(dataset: str, corruption: str, severity: int | None,
                        *, data_dir: str | os.PathLike | None = None,
                        download: bool = False, image_size: int = 32,
                        cache_dir=None, cache: bool = True
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The 'test' split of a TFDS corrupted test set -> (x, y).

    Args:
      dataset: 'cifar10' (CIFAR-10-C) or 'mnist' (MNIST-C).
      corruption: one of tfds_corruptions(dataset).
      severity: CIFAR-10-C: 1..5. MNIST-C has a single level and needs None
        (any other value is refused rather than ignored, so a result is never
        labelled with a severity it does not have).
      data_dir: TFDS data dir; None -> $TFDS_DATA_DIR or ~/tensorflow_datasets.
      download: if the prepared config is missing, download and prepare it
        (needs internet and TensorFlow); False fails fast instead.
      image_size: output height and width (bilinear resize when different).
      cache_dir, cache: the prepared-array cache, as in registry.load_dataset.

    Returns:
      x: uint8 (N, image_size, image_size, 3); y: int32 (N,) in 0..9.

    Raises:
      DatasetNotFoundError: the config is not prepared in data_dir (and
        download is False), or not as array_record.
      ValueError: unknown dataset or corruption, bad severity or image_size,
        or labels outside 0..9.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(
            f'image_size must be a positive int, got {image_size!r}')
    tfds_name = _builder_name(dataset, corruption, severity)
    level = '' if severity is None else f' severity {severity}'
    name = f'{_TITLES[dataset]} {corruption}{level}'
    spec = TfdsSpec(tfds_name, 'label')

    def build(builder):
        (src,) = data_sources(name, builder, ['test'])
        x, y = read_split(src, spec, builder.info.features['label'].num_classes,
                           name)
        return dict(x=to_rgb(x, image_size), y=y)

    arrays = cached_tfds_arrays(name, tfds_name, data_dir=data_dir, download=download,
                                settings=dict(split='test', image_size=int(image_size)),
                                build=build, cache_dir=cache_dir, cache=cache)
    return arrays['x'], arrays['y']
