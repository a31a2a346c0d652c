"""The pmap devices of training: the axis the train step runs over, trees copied to each
device as pmap's own outputs are laid out, and which global batch positions this process's
devices feed."""
import jax
import numpy as np

AXIS = 'batch'  # The pmap axis of the train step (and of BatchNorm's cross-device means).


def replicate(tree, devices=None):
    """A copy of tree on each device, laid out as pmap's own outputs are.

    flax's replicate gives arrays whose sharding names another mesh axis than
    pmap's outputs, so the second step would recompile the train step.
    """
    devices = devices or jax.local_devices()
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)),
                           tree)
    return jax.pmap(lambda x: x, axis_name=AXIS, devices=devices)(stacked)


def unreplicate(tree):
    """Device 0's copy of a pmap-replicated tree (flax's returns (1, ...) arrays when
    pmap ran on 1 of several devices)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data.reshape(x.shape[1:]), tree)


def local_device_positions():
    """The pmap axis index (the global position) of each of this process's devices, in
    jax.local_devices() order: which rows of a global batch this host feeds."""
    out = jax.pmap(lambda x: jax.lax.axis_index(AXIS), axis_name=AXIS)(
        np.zeros(jax.local_device_count()))
    position = {s.device: int(np.asarray(s.data).reshape(-1)[0]) for s in out.addressable_shards}
    return [position[d] for d in jax.local_devices()]
