"""End-to-end training: device-count invariance, batch sampling, resume, launch.py."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils

from configs import default
from unode_jax import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**kw):
  config = default.get_config()
  config.data.name = 'digits'
  config.data.image_size = 16
  config.model.name = 'tiny'
  config.batch_size = 8
  config.optim.num_epochs = 2
  config.optim.warmup_epochs = 1
  config.progress_bar = False
  for k, v in kw.items():
    section, _, field = k.rpartition('.')
    setattr(config[section] if section else config, field, v)
  return config


def run_steps(config, images, n_dev, k):
  devices = jax.local_devices()[:n_dev]
  model = train_lib.build_model(config, bn_axis_name=train_lib.AXIS)
  state = train_lib.create_train_state(jax.random.key(0), config, model, images.shape[1])
  p_step = train_lib.make_p_train_step(config, devices)
  rep = lambda x: jax_utils.replicate(x, devices=devices)
  state_r = rep(state)
  args = (rep(jnp.asarray(images)), rep(jnp.int32(len(images))),
          rep(jnp.full((9,), 1 / 9, jnp.float32)), rep(jnp.float32(len(images) // 8)))
  history = []
  for _ in range(k):
    state_r, m = p_step(state_r, *args)
    history.append({name: float(v[0]) for name, v in m.items()})
  return jax_utils.unreplicate(state_r), history


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize('kind, mode, per', [('paper', 'compose', 'batch'),
                                             ('authors', 'single', 'sample')])
def test_devices_give_the_same_steps(images, kind, mode, per):
  config = tiny_config(**{'loss.kind': kind, 'negatives.mode': mode, 'negatives.per': per,
                          'negatives.per_view': kind == 'authors'})
  ref_state, ref = run_steps(config, images, 1, 3)
  for n_dev in (2, 4):
    state, hist = run_steps(config, images, n_dev, 3)
    for a, b in zip(ref, hist):
      for name in ('loss', 'loss_con', 'loss_ce', 'grad_norm', 'lr'):
        np.testing.assert_allclose(b[name], a[name], rtol=2e-4, err_msg=f'{name}, {n_dev} devices')
    for a, b in zip(jax.tree.leaves(ref_state.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
  assert np.isfinite(ref[-1]['loss'])


def test_batch_indices_visit_every_image_once_per_epoch():
  n, n_pad, g = 10, 16, 4
  rng = jax.random.key(3)
  idx = np.concatenate([
      np.asarray(train_lib.batch_indices(rng, s, jnp.arange(g), n, n_pad, g)) for s in range(5)])
  # 5 steps x 4 = 20 samples = exactly two epochs of the 10 valid rows.
  assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:]) == list(range(10))
  assert not np.array_equal(idx[:10], idx[10:])  # each epoch has its own order


def _launch(workdir, *overrides, timeout=600):
  cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=' +
         os.path.join(ROOT, 'configs/digits.py'), f'--workdir={workdir}', *overrides]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


RESUME_FLAGS = ('--mode=train', '--config.data.normal_class=3', '--config.optim.num_epochs=4',
                '--config.checkpoint_every=2', '--config.log_every=1',
                '--config.progress_bar=False', '--config.data.image_size=16')


def _final_params(workdir):
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, 'checkpoints')
  mgr = ocp.CheckpointManager(path, item_names=('state', 'meta'))
  step = mgr.latest_step()
  tree = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  mgr.close()
  return step, tree['params']


def test_kill_and_resume_ends_with_the_same_parameters(tmp_path):
  straight = tmp_path / 'straight'
  r = _launch(straight, *RESUME_FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]

  killed = tmp_path / 'killed'
  cmd = [sys.executable, os.path.join(ROOT, 'launch.py'),
         '--config=' + os.path.join(ROOT, 'configs/digits.py'), f'--workdir={killed}',
         *RESUME_FLAGS]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = killed / 'metrics.jsonl'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  r = _launch(killed, *RESUME_FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]

  step_a, a = _final_params(straight)
  step_b, b = _final_params(killed)
  assert step_a == step_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  steps = [json.loads(l)['step'] for l in metrics.read_text().splitlines()]
  assert steps == sorted(set(steps)) and steps[-1] == step_a  # no duplicated log lines


def test_bad_override_fails_with_one_line(tmp_path):
  for flag, word in [('--config.data.name=nope', 'data.name'),
                     ('--config.batch_size=0', 'batch_size'),
                     ('--config.data.normal_class=12', 'normal_class')]:
    r = _launch(tmp_path / 'bad', flag, timeout=300)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error:') and word in last, r.stderr[-2000:]
