"""BatchNorm statistics recomputed on clean inlier images after training ("precise BN").

During training every batch is half hard negatives of one random composition
(negatives.per='batch'), and with momentum 0.9 the running statistics are those of the
last few compositions; evaluation applies them to natural images. `inlier_batch_stats`
replaces them by the statistics of the training images themselves: each batch of clean
(unaugmented) inliers is passed through the network in training mode, each layer's batch
mean and variance are read back, and their averages over the batches become the running
statistics (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). score.bn_stats
chooses: 'train' keeps the running statistics of training, 'inliers' recomputes them.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.models import build_model, normalize_input

BN_STATS = ('inliers', 'train')


@functools.partial(jax.jit, static_argnames=('apply_fn', 'input_norm', 'momentum'))
def _batch_moments(params, batch_stats, images, *, apply_fn, input_norm, momentum):
    """Each BatchNorm layer's batch mean and variance on these images (training mode)."""
    x = normalize_input(images.astype(jnp.float32) / 255.0, input_norm)
    _, new = apply_fn({'params': params, 'batch_stats': batch_stats}, x, train=True,
                      mutable=['batch_stats'])
    # Flax: running = m * running + (1 - m) * batch, so batch = (new - m * old) / (1 - m).
    return jax.tree.map(lambda n, o: (n - momentum * o) / (1.0 - momentum),
                        new['batch_stats'], batch_stats)


def inlier_batch_stats(state, images, config, momentum=0.9):
    """The state with its BatchNorm statistics recomputed on `images` (uint8, the training
    inliers), in batches of config.batch_size, averaged over the batches."""
    if config.score.bn_stats == 'train':
        return state
    model = build_model(config, num_classes=state.params['head']['kernel'].shape[-1])
    b = min(config.batch_size, len(images))
    sums, count = None, 0
    for start in range(0, len(images) - b + 1, b):  # full batches only: equal weights
        m = _batch_moments(state.params, state.batch_stats, images[start:start + b],
                           apply_fn=model.apply, input_norm=config.model.input_norm,
                           momentum=momentum)
        m = jax.tree.map(np.asarray, m)
        sums = m if sums is None else jax.tree.map(np.add, sums, m)
        count += 1
    stats = jax.tree.map(lambda s, old: jnp.asarray(s / count, old.dtype), sums, state.batch_stats)
    return state.replace(batch_stats=stats)
