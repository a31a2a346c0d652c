"""XLA's FLOP count (and with --memory its memory) of one training step of a config, before
any GPU time is spent.

  python benchmarks/flops.py --config=configs/cifar10.py
  python benchmarks/flops.py --config=configs/cifar10.py --memory   # compiles: minutes
  python benchmarks/flops.py --config=configs/cifar10.py --config.model.stem=imagenet
  python benchmarks/flops.py --config=configs/cifar10.py --config.model.stem=imagenet_224

Lowers the whole pmapped training step (views, hard negatives, forward and backward of
the 4B rows, LARS update) on one device at the config's global batch and prints XLA's
cost analysis of it (`Lowered.cost_analysis()['flops']`; nothing is compiled or run, so
even a 224 px Wide-ResNet takes seconds), with the parameter count and the FLOPs of
the config's whole schedule for one normal class of `--images_per_class` images. The
numbers in the configs' docstrings come from here. --memory also compiles the step for
this machine's first device and prints XLA's memory analysis of it per device (the state,
the batch and the activations; unode_jax/training/memory.py reads the same before a run); compiled
on a CPU it sizes the step, a GPU's compiler may fuse and lay out differently. With
--config.model.dtype=bfloat16 it gives an accelerator's default compute dtype on a CPU.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from unode_jax.models import compute_dtype  # noqa: E402
from unode_jax.training import memory, train as train_lib  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
flags.DEFINE_integer('images_per_class', 5000, 'Training images of one normal class, for the '
                     'cost of the whole schedule (CIFAR-10: 5,000).')
flags.DEFINE_bool('memory', False, 'Also compile the step and print its memory per device.')
flags.mark_flags_as_required(['config'])


def lowered_step(config):
    """(The pmapped training step lowered on one device at the global batch, params)."""
    devices = jax.local_devices()[:1]
    s, b = config.data.image_size, config.batch_size
    state = train_lib.create_train_state(jax.random.key(0), config, s, train_lib.AXIS)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
    weights = np.full(len(config.negatives.transforms), 1 / len(config.negatives.transforms),
                      np.float32)
    images = np.zeros((b, s, s, 3), np.uint8)
    batch = train_lib.device_batch(images, np.ones(b, np.int32), weights, images[:1], n_valid=b)
    stacked = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], (state, batch))
    return train_lib.make_p_train_step(config, devices).lower(*stacked), n_params


def step_flops(config):
    """(XLA FLOPs of one global training step on one device, parameter count)."""
    lowered, n_params = lowered_step(config)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost['flops']), n_params


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    flops, n_params = step_flops(config)
    steps = FLAGS.images_per_class // config.batch_size * config.optim.num_epochs
    stem = config.model.stem or '(the model\'s own)'
    print(f'{config.model.name}, stem {stem}, {config.data.image_size} px, batch '
          f'{config.batch_size} ({4 * config.batch_size} rows), {n_params / 1e6:.1f}M params')
    size = f'{flops / 1e12:.2f} TFLOP' if flops >= 1e12 else f'{flops / 1e9:.1f} GFLOP'
    print(f'XLA FLOPs per training step: {flops:.3e} ({size})')
    print(f'{steps:,} steps a class ({FLAGS.images_per_class:,} images, '
          f'{config.optim.num_epochs} epochs): {flops * steps:.3e} FLOPs '
          f'({flops * steps / 1e15:.1f} PFLOP)')
    if FLAGS.memory:
        mem = memory.step_memory(lowered_step(config)[0].compile())
        b = config.batch_size
        print(f'memory of the step on one {jax.default_backend()} device at batch {b} '
              f'({compute_dtype(config.model.dtype).name}): {mem["total"] / memory.GIB:.2f} GiB '
              f'(state and batch {mem["arguments"] / memory.GIB:.2f} GiB, activations '
              f'{mem["temp"] / memory.GIB:.2f} GiB = {mem["temp"] / b / 2 ** 20:.0f} MiB an '
              'inlier image)')


if __name__ == '__main__':
    app.run(main)
