"""Baselines every run is measured against: what training added, and what no network gives.

  untrained  the learning check: eq. (13)'s similarity computed with the *untrained*
             network (the same seed and init as training, before step 0), so a run
             shows how much training improved the similarity term.
  pixel_knn  eq. (13) on raw pixels: each test image's largest cosine similarity to the
             training images (downsampled to at most PIXEL_SIDE px a side).

Each gives a per-test-image score (higher = more normal) that is saved in scores.npz
beside the method's own, so reports rebuild their AUROC from the saved scores.
`score.baselines` lists the ones to compute.
"""
import functools

import jax
import numpy as np

from unode_jax.evaluation import score

# Score key in scores.npz -> its AUROC's key in results.json and its column header.
BASELINES = {
    'untrained': ('sim_untrained', 'auroc_untrained', 'untrained'),
    'pixel_knn': ('pixel_knn', 'auroc_pixel_knn', 'pixel kNN'),
}
PIXEL_SIDE = 64  # pixel_knn downsamples larger images to this side (bounded memory).
PIXEL_BATCH = 256  # images converted and resized at a time: float32 copies stay small.


def pixel_features(images):
    """uint8 (N, H, W, C) -> float32 (N, D) raw pixels, area-downsampled to PIXEL_SIDE,
    PIXEL_BATCH images at a time (ImageNet-30's 224 px set as float32 at once: ~23 GB)."""
    images = np.asarray(images)
    n, side, _, c = images.shape
    out_side = min(side, PIXEL_SIDE)
    out = np.empty((n, out_side * out_side * c), np.float32)
    for start in range(0, n, PIXEL_BATCH):
        x = images[start:start + PIXEL_BATCH].astype(np.float32) / 255.0
        if side > PIXEL_SIDE:
            x = np.asarray(_resize(x, PIXEL_SIDE))
        out[start:start + len(x)] = x.reshape(len(x), -1)
    return out


@functools.partial(jax.jit, static_argnums=1)
def _resize(x, side):
    return jax.image.resize(x, (x.shape[0], side, side, x.shape[3]), 'linear', antialias=True)


def untrained_embedder(config, image_size, num_classes, embed):
    """images -> z of the network before training (the init `train` starts from)."""
    from unode_jax.training import train as train_lib  # The init lives with the trainer.
    # With the trainer's BatchNorm axis: the same model object as the trained state's, so
    # the init and the embedding reuse their compiled programs (~5 s on a 2-core CPU); the
    # axis only matters to batch statistics in training, which embedding does not use.
    state = train_lib.create_train_state(jax.random.key(config.seed), config, image_size,
                                         train_lib.AXIS, num_classes=num_classes)
    return lambda images: embed(state, images, config, with_copies=False)['z']


class Baselines:
    """The configured baselines for one model's training images; `scores(x)` per test set."""

    def __init__(self, config, x_fit, embed, num_classes=2):
        self.names = tuple(config.score.baselines)
        unknown = set(self.names) - set(BASELINES)
        if unknown:
            raise ValueError(f'score.baselines entries must be in {tuple(BASELINES)}, '
                             f'got {sorted(unknown)}')
        self._features, self._banks = {}, {}
        if 'untrained' in self.names:
            self._features['untrained'] = untrained_embedder(config, x_fit.shape[1],
                                                             num_classes, embed)
        if 'pixel_knn' in self.names:
            self._features['pixel_knn'] = pixel_features
        for name, features in self._features.items():
            self._banks[name] = features(x_fit)

    def scores(self, images):
        """{score key: (N,) float32} for the test images (see BASELINES)."""
        return {BASELINES[n][0]: score.max_cosine_similarity(self._features[n](images),
                                                             self._banks[n])
                for n in self.names}


def baseline_columns(rows):
    """The AUROC keys of the baselines that every row of a report has."""
    return tuple(key for _, key, _ in BASELINES.values()
                 if rows and all(key in r for r in rows))
