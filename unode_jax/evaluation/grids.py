"""The test images the report shows, picked from a model's saved scores (scores.npz).

Per class (or outlier set), GRID images each, ties going to the lower index:
  most_normal    the test images of highest score
  least_normal   the test images of lowest score
  worst_novel    novel test images scored most normal (the misses a threshold lets through)
  worst_normal   normal test images scored least normal (the false alarms)

The test images are not in scores.npz. At evaluation time save_images keeps the few the
grids need (uint8, at most MAX_SIDE px a side) with their test-set indices in
test_images.npz beside scores.npz, under the digest of the scores they were picked from;
grid_images draws from a test_images.npz only when that digest is the one of the
scores.npz beside it and it holds every image the scores pick, so a grid never shows
the images of another evaluation.
"""
import hashlib
import os

import numpy as np

from unode_jax.data.prepare import resize_bilinear
from unode_jax.runtime.errors import DamagedFileError
from unode_jax.runtime.files import read_npz, write_npz

IMAGES_FILE = 'test_images.npz'
GRID = 8  # Images per grid.
MAX_SIDE = 128  # Larger test images are kept downsampled to this side.
GRIDS = ('most_normal', 'least_normal', 'worst_novel', 'worst_normal')


def digest(scores):
    """sha256 of scores' is_normal and score (as float64): what a grid's images are keyed by."""
    h = hashlib.sha256()
    for key in ('is_normal', 'score'):
        a = np.ascontiguousarray(np.asarray(scores[key], np.float64))
        h.update(f'{key}{a.shape}'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _highest(score, candidates, n):
    """The n candidates of highest score, highest first (ties: the lower index first)."""
    return candidates[np.lexsort((candidates, -score[candidates]))[:n]]


def _lowest(score, candidates, n):
    """The n candidates of lowest score, lowest first (ties: the lower index first)."""
    return candidates[np.lexsort((candidates, score[candidates]))[:n]]


def select(score, is_normal, n=GRID):
    """{grid name (GRIDS): test-set indices, in the grid's order}."""
    score = np.asarray(score, np.float64)
    is_normal = np.asarray(is_normal, bool)
    every = np.arange(len(score))
    return dict(most_normal=_highest(score, every, n), least_normal=_lowest(score, every, n),
                worst_novel=_highest(score, every[~is_normal], n),
                worst_normal=_lowest(score, every[is_normal], n))


def take_from(*parts):
    """take(indices) -> the images at those indices of the concatenated image arrays
    `parts` (a multi-class run's inlier then outlier test images), without concatenating."""
    starts = np.cumsum([0] + [len(p) for p in parts])

    def take(indices):
        which = np.searchsorted(starts, indices, side='right') - 1
        return np.stack([parts[k][i - starts[k]] for i, k in zip(indices, which)] or
                        [np.zeros(parts[0].shape[1:], np.uint8)])[:len(indices)]
    return take


def save_images(directory, scores, take):
    """test_images.npz: the images the grids of `scores` (score, is_normal: as saved in
    scores.npz) show; take(indices) -> those test images, uint8 (N, H, W, C)."""
    picked = select(scores['score'], scores['is_normal'])
    indices = np.unique(np.concatenate(list(picked.values()))).astype(np.int64)
    try:
        x = np.asarray(take(indices))
    except ValueError:  # Test sets of different shapes (no grid rather than no evaluation).
        return
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(indices):
        return  # Not images the grids can show: no file, no grid.
    h, w = x.shape[1:3]
    if max(h, w) > MAX_SIDE:
        x = resize_bilinear(x, max(1, round(h * MAX_SIDE / max(h, w))),
                            max(1, round(w * MAX_SIDE / max(h, w))))
    write_npz(os.path.join(directory, IMAGES_FILE), indices=indices, images=x,
              digest=np.str_(digest(scores)))


def grid_images(directory, scores):
    """{grid name: (indices, uint8 images)} of the scores read from directory's scores.npz,
    from its test_images.npz; None where that file is absent, damaged, of other scores or
    short of an image the scores pick."""
    path = os.path.join(directory, IMAGES_FILE)
    if not os.path.exists(path):
        return None
    try:
        saved = read_npz(path, 'rerun --mode=eval to rewrite it')
    except DamagedFileError:
        return None
    if 'digest' not in saved or str(saved['digest']) != digest(scores):
        return None
    images, indices = saved.get('images'), saved.get('indices')
    if images is None or indices is None or len(images) != len(indices):
        return None
    row = {int(i): k for k, i in enumerate(indices)}
    picked = select(scores['score'], scores['is_normal'])
    if any(int(i) not in row for idx in picked.values() for i in idx):
        return None
    return {name: (idx, images[np.asarray([row[int(i)] for i in idx], np.int64)])
            for name, idx in picked.items()}
