"""Which training images each step sees: every draw keyed by (seed, step, global position),
so the trajectory does not depend on the device count, nor on whether the images live on
the devices or stream from host memory (streamed_batches, put ahead by prefetch)."""
import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np


def batch_indices(rng, step, positions, n_valid, n_pad, global_batch):
    """Training-set indices of the given global-batch positions (any shape) at this step.

    Sample s = step * G + position is item s % n of epoch s // n; epoch e visits the
    n valid images in the order of a permutation keyed by (rng, e). The array is
    padded to n_pad rows so one compilation serves any n <= n_pad; padded rows get
    sort keys of +inf and so are never visited. Needs G <= n (checked on the host),
    so a batch spans at most two epochs.
    """
    s = step * global_batch + positions
    first_epoch = (step * global_batch) // n_valid

    def permutation(epoch):
        u = jax.random.uniform(jax.random.fold_in(rng, epoch), (n_pad,))
        return jnp.argsort(jnp.where(jnp.arange(n_pad) < n_valid, u, jnp.inf))

    perms = jnp.stack([permutation(first_epoch), permutation(first_epoch + 1)])
    return perms[s // n_valid - first_epoch, s % n_valid]


def image_indices(rng, step, positions, n_valid, n_pad, global_batch):
    """(indices of the images at these positions, of their mixup partners): the image at
    the next global position, another inlier of the batch, from one pair of epoch
    permutations."""
    data_rng = jax.random.fold_in(rng, 0)
    return batch_indices(data_rng, step, jnp.stack([positions, (positions + 1) % global_batch]),
                         n_valid, n_pad, global_batch)


def streamed_batches(config, images, targets, n_pad, start, total, n_dev, positions=None):
    """Each step's images and mixup partners (d, b, H, W, 3) and targets (d, b) for the
    devices at `positions` of the n_dev (default: all, d = n_dev), gathered on the host: a
    process of a multi-host run produces only its own devices' rows of each global batch.

    For training sets over data.device_budget_mb: the indices are image_indices' (run on
    index_device(); threefry and the sort are the same on every backend), so a streamed
    run visits the same samples with the same random draws as a resident one.
    """
    g = config.batch_size
    where = index_device()
    # n_pad as the resident run's, so the permutations match even where the draws depend
    # on the array's length (jax_threefry_partitionable=False).
    indices = jax.jit(lambda step: image_indices(jax.random.key(config.seed), step,
                                                 jnp.arange(g), len(images), n_pad, g))
    rows = np.asarray(positions if positions is not None else range(n_dev))
    for step in range(start, total):
        with jax.default_device(where):
            idx, partner = np.asarray(indices(jnp.int32(step)))
        idx, partner = idx.reshape(n_dev, -1)[rows], partner.reshape(n_dev, -1)[rows]
        yield dict(images=images[idx], partners=images[partner], targets=targets[idx])


def index_device():
    """Where streamed_batches computes each step's indices: this process's CPU, off the
    accelerator's queue (where they would wait behind the step in flight); the first local
    device when jax runs without a CPU backend (JAX_PLATFORMS=cuda or tpu)."""
    try:
        return jax.local_devices(backend='cpu')[0]
    except RuntimeError:  # "Unknown backend cpu": JAX_PLATFORMS does not list it.
        return jax.local_devices()[0]


def prefetch(batches, axis_name, size=2):
    """batches (host arrays, leading axis = this process's devices) put on the devices,
    `size` in flight, with jax.device_put, split over the local devices in
    jax.local_devices() order as pmap's own outputs are (so the step never recompiles)."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (axis_name,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))
    batches = iter(batches)

    def put(n):
        return [jax.device_put(b, sharding) for b in itertools.islice(batches, n)]
    queue = collections.deque(put(size))
    while queue:
        yield queue.popleft()
        queue.extend(put(1))
