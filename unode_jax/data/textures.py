"""'textures' (offline): patches of stationary, isotropic gray textures bundled with
scikit-image, one class per texture.

The dataset on which rotation is a harmless transform: a patch of grass turned by 90
degrees is still a patch of grass, so AutoAugOOD (autoaug.py) should give the 'rotation'
negative a low weight here, where it gives it a high one on digits and Fashion-MNIST (a
turned 6 is no 6).

  class     scikit-image file        what it shows
  grass     grass.png                grass, 512 x 512
  gravel    gravel.png               gravel, 512 x 512
  galaxies  hubble_deep_field.jpg    the Hubble deep field (colour, 872 x 1000), in gray
  moon      moon.png                 the lunar surface, 512 x 512 (the least stationary)

Each image: its central 512 x 512, averaged over 2 x 2 blocks to 256 x 256 (a 32 px patch
then holds several stones, blades or galaxies), cut into 32 x 32 patches on a grid of
stride 8. The left 160 columns give the training patches (29 x 17 = 493 a class), the
right 96 the test patches (29 x 9 = 261 a class): the regions are disjoint, no test patch
holds a training pixel. Patches overlap within a region. No randomness. The files are
read from the installed scikit-image package (those its wheel ships), never downloaded.

Left out: brick.png. Its courses all run one way, and turned by 90 degrees a brick patch is
unlike the class's own patches (its gradient and correlation statistics are nearer the
other textures'): rotation is not harmless there.
"""
from __future__ import annotations

import pathlib

import numpy as np

from unode_jax.data.types import Dataset, DatasetNotFoundError

# Class name -> the file in scikit-image's data folder, in label order.
TEXTURES = {'grass': 'grass.png', 'gravel': 'gravel.png',
            'galaxies': 'hubble_deep_field.jpg', 'moon': 'moon.png'}
CROP = 512          # Central square taken from each image.
DOWNSCALE = 2       # Block-average factor: CROP -> 256.
PATCH = 32          # Patch side (the dataset's native image size).
STRIDE = 8          # Grid step within a region.
TRAIN_COLUMNS = 160  # Of the 256 downscaled columns: [0, 160) train, [160, 256) test.


def skimage_data_dir() -> pathlib.Path:
    """The data folder inside the installed scikit-image package (what its wheel ships; not
    pooch's download cache)."""
    try:
        import skimage.data
    except ImportError:
        raise DatasetNotFoundError("data.name='textures' reads scikit-image's bundled images: "
                                   'pip install scikit-image') from None
    return pathlib.Path(skimage.data.__file__).parent


def read_texture(path) -> np.ndarray:
    """One texture file -> uint8 (256, 256) gray: its central CROP^2, block-averaged."""
    from PIL import Image

    with Image.open(path) as im:
        x = np.asarray(im.convert('L'))
    h, w = x.shape
    if h < CROP or w < CROP:
        raise ValueError(f'{path}: {w} x {h}, smaller than {CROP} x {CROP}')
    top, left = (h - CROP) // 2, (w - CROP) // 2
    x = x[top:top + CROP, left:left + CROP].astype(np.float64)
    side = CROP // DOWNSCALE
    x = x.reshape(side, DOWNSCALE, side, DOWNSCALE).mean(axis=(1, 3))
    return np.rint(x).astype(np.uint8)


def cut(image: np.ndarray, first_column: int, end_column: int) -> np.ndarray:
    """The PATCH^2 patches of image's columns [first_column, end_column) on the STRIDE grid,
    row by row -> uint8 (N, PATCH, PATCH)."""
    region = image[:, first_column:end_column]
    windows = np.lib.stride_tricks.sliding_window_view(region, (PATCH, PATCH))
    return np.ascontiguousarray(windows[::STRIDE, ::STRIDE].reshape(-1, PATCH, PATCH))


def load_textures() -> Dataset:
    folder = skimage_data_dir()
    missing = [f for f in TEXTURES.values() if not (folder / f).is_file()]
    if missing:
        import skimage
        raise DatasetNotFoundError(
            f"data.name='textures': {', '.join(missing)} not in the installed scikit-image "
            f'{skimage.__version__} ({folder}); requirements.txt pins the version that ships '
            'them')
    x_tr, y_tr, x_te, y_te = [], [], [], []
    for label, file in enumerate(TEXTURES.values()):
        image = read_texture(folder / file)
        train, test = cut(image, 0, TRAIN_COLUMNS), cut(image, TRAIN_COLUMNS, image.shape[1])
        x_tr.append(train)
        x_te.append(test)
        y_tr.append(np.full(len(train), label, np.int32))
        y_te.append(np.full(len(test), label, np.int32))
    return Dataset('textures', np.concatenate(x_tr), np.concatenate(y_tr),
                   np.concatenate(x_te), np.concatenate(y_te), len(TEXTURES),
                   tuple(TEXTURES))
