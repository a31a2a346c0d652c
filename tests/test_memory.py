"""Device memory of the training step (memory.py): XLA's analysis, the batch that fits,
and a run that stops before its first step where the step will not fit."""
import os

import jax
import numpy as np
import pytest

from tests.tiny_config import tiny_config
from unode_jax.runtime.errors import error_line
from unode_jax.training import devices as devices_lib, memory, optim, train as train_lib

SMALL_SET = ('rotation', 'cutout', 'mixup')


def test_fitting_batch_restated():
    mem = dict(temp=800, total=1000, arguments=150)  # 200 fixed, 800 for 4 rows a device
    # 200 a row a device: 700 bytes leave 500 for activations: 2 rows a device, 4 in all.
    assert memory.fitting_batch(mem, batch_size=8, n_dev=2, limit=700) == 4
    assert memory.fitting_batch(mem, batch_size=8, n_dev=2, limit=1000) == 8
    assert memory.fitting_batch(mem, batch_size=8, n_dev=2, limit=150) == 0  # fixed part


@pytest.fixture(scope='module')
def step_and_args():
    config = tiny_config(**{'negatives.transforms': SMALL_SET, 'batch_size': 8})
    images = np.random.default_rng(0).integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    devices = jax.local_devices()[:2]  # 2 (one on a single accelerator)
    state = train_lib.create_train_state(jax.random.key(0), config, 16, train_lib.AXIS)
    state = state.replace(opt_state=optim.set_steps_per_epoch(state.opt_state, 3))
    batch = train_lib.device_batch(images, np.ones(24, np.int32), np.full(3, 1 / 3), images[:1],
                                   n_valid=24)
    return (len(devices), train_lib.make_p_train_step(config, devices),
            (devices_lib.replicate(state, devices), devices_lib.replicate(batch, devices)))


@pytest.mark.slow
def test_the_step_s_memory_is_xla_s_analysis_and_a_small_device_names_the_batch_that_fits(
        step_and_args):
    n, step, args = step_and_args
    assert memory.check_step_fits(step, args, 8, n, limit=0) is None  # no limit reported
    mem = memory.check_step_fits(step, args, 8, n, limit=2 ** 40)
    assert 0 < mem['temp'] < mem['total'] and mem['arguments'] > 0
    fixed = mem['total'] - mem['temp']
    # Room for exactly one row a device (8 // n rows a device at batch 8): batch n.
    limit = fixed + mem['temp'] // (8 // n) + 1
    with pytest.raises(memory.DeviceMemoryError) as e:
        memory.check_step_fits(step, args, 8, n, limit=limit)
    line = error_line(e.value)
    assert '\n' not in line and f'--config.batch_size={n} fits' in line, line
    assert 'at batch_size=8' in line
    # Not even the state and the images: streaming is what helps.
    with pytest.raises(memory.DeviceMemoryError, match='device_budget_mb=0'):
        memory.check_step_fits(step, args, 8, n, limit=fixed // 2)

@pytest.mark.slow
def test_a_run_whose_step_cannot_fit_stops_before_its_first_step(tmp_path, monkeypatch):
    config = tiny_config(**{'negatives.transforms': SMALL_SET})
    images = np.random.default_rng(0).integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    monkeypatch.setattr(memory, 'device_limit', lambda device=None: 4096)  # 4 KiB devices
    with pytest.raises(memory.DeviceMemoryError):
        train_lib.train(config, str(tmp_path), images, np.full(3, 1 / 3, np.float32))
    assert not os.path.exists(tmp_path / 'checkpoints') or not os.listdir(
        tmp_path / 'checkpoints')
    metrics = tmp_path / 'metrics.jsonl'
    assert not metrics.exists() or metrics.read_text() == ''
