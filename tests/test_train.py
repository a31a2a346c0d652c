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

from tests.tiny_config import tiny_config
from unode_jax import train as train_lib

SMALL_SET = ('rotation', 'cutout', 'mixup')  # fewer branches: faster compiles in tests
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_steps(config, images, n_dev, k):
    devices = jax.local_devices()[:n_dev]
    state = train_lib.create_train_state(jax.random.key(0), config, images.shape[1], train_lib.AXIS)
    p_step = train_lib.make_p_train_step(config, devices)
    def rep(x): return train_lib.replicate(x, devices)
    state_r = rep(state)
    args = (rep(jnp.asarray(images)), rep(jnp.ones(len(images), jnp.int32)),
            rep(jnp.int32(len(images))),
            rep(jnp.full((len(SMALL_SET),), 1 / len(SMALL_SET), jnp.float32)), rep(jnp.float32(len(images) // 8)),
            rep(jnp.asarray(images[:1])))
    history = []
    for _ in range(k):
        state_r, m = p_step(state_r, *args)
        history.append({name: float(v[0]) for name, v in m.items()})
    return train_lib.unreplicate(state_r), history


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize('kind, mode, per, n_devs', [('paper', 'compose', 'batch', (2, 4)),
                                                     ('authors', 'single', 'sample', (4,))])
def test_devices_give_the_same_steps(images, kind, mode, per, n_devs):
    config = tiny_config(**{'loss.kind': kind, 'negatives.mode': mode, 'negatives.per': per,
                            'negatives.per_view': kind == 'authors',
                            'negatives.transforms': SMALL_SET})
    ref_state, ref = run_steps(config, images, 1, 3)
    for n_dev in n_devs:
        state, hist = run_steps(config, images, n_dev, 3)
        for a, b in zip(ref, hist):
            for name in ('loss', 'loss_con', 'loss_ce', 'grad_norm', 'lr'):
                np.testing.assert_allclose(b[name], a[name], rtol=2e-4,
                                           err_msg=f'{name}, {n_dev} devices')
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

    # --mode=eval scores the finished run from its checkpoint, without training.
    r = _launch(killed, *RESUME_FLAGS, '--mode=eval')
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((killed / 'results.json').read_text())['classes']['3']
    assert result['steps'] == step_a and 0 <= result['auroc'] <= 1
    assert 'AUROC' in r.stdout
    # --mode=report needs no config: everything comes from the saved scores.
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), '--mode=report',
                        f'--workdir={killed}'], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'FPR@95' in r.stdout and (killed / 'results.md').exists()


def test_bad_override_fails_with_one_line(tmp_path):
    for flag, word in [('--config.data.name=nope', 'data.name'),
                       ('--config.batch_size=0', 'batch_size'),
                       ('--config.data.normal_class=12', 'normal_class')]:
        r = _launch(tmp_path / 'bad', flag, timeout=300)
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith('error:') and word in last, r.stderr[-2000:]


def test_quick_start_detects_novel_digits_and_sweep_resumes(tmp_path):
    from configs import digits
    from unode_jax.run import run
    config = digits.get_config()
    config.progress_bar = False
    config.optim.num_epochs = 10  # the quick start's 40, shortened for the test
    # --mode=all: the sweep, its reports, then every corruption of the test set (Table 2).
    config.corruptions.names = ('gaussian_noise', 'rotate')
    summary = run(config, str(tmp_path), mode='all', classes=(0, 1))
    assert summary['mean_auroc'] > 0.7, summary
    for c in ('0', '1'):
        r = summary['classes'][c]
        assert r['n_test_inliers'] + r['n_test_outliers'] == 599
        assert r['holdout'] == 0.2  # the quick start holds out a fifth for predict's threshold
    saved = json.loads((tmp_path / 'results.json').read_text())
    assert saved['mean_auroc'] == pytest.approx(summary['mean_auroc'])
    assert saved['autoaug_embedder']['name'] == 'random_cnn'  # the quick start's offline weights
    for c in ('0', '1'):
        r = summary['classes'][c]
        assert 0 <= r['fpr95'] <= 1 and 0 < r['aupr_in'] <= 1 and 0 < r['aupr_out'] <= 1
        assert r['negative_weights_source'] == 'auto' and r['autoaug_embedder']['name'] == 'random_cnn'
        # The learning check and pixel kNN are columns of every run.
        assert 0.5 < r['auroc_untrained'] < 1 and r['auroc_pixel_knn'] > 0.95
        assert (tmp_path / f'class_{c}' / 'autoaug.json').exists()
        assert (tmp_path / f'class_{c}' / 'roc.png').exists()
    # --mode=report rebuilds the same reports from the saved scores.
    first = {n: (tmp_path / n).read_text() for n in ('results.csv', 'results.md')}
    run(config, str(tmp_path), mode='report')
    assert {n: (tmp_path / n).read_text() for n in first} == first
    corrupted = json.loads((tmp_path / 'corrupted.json').read_text())
    for c in ('0', '1'):
        per = json.loads((tmp_path / f'class_{c}' / 'corrupted.json').read_text())
        assert list(per) == ['identity', 'gaussian_noise', 'rotate']
        assert per['identity']['auroc'] == pytest.approx(summary['classes'][c]['auroc'])
        assert per['rotate']['auroc'] != per['identity']['auroc']
    assert corrupted['mean_corrupted']['auroc'] == pytest.approx(np.mean(
        [corrupted['corruptions'][n]['auroc'] for n in ('gaussian_noise', 'rotate')]))
    assert '| rotate |' in (tmp_path / 'corrupted.md').read_text()
    # A rerun finds both classes finished and retrains nothing.
    log = tmp_path / 'class_0' / 'metrics.jsonl'
    before = log.read_text()
    again = run(config, str(tmp_path), classes=(0, 1))
    assert again['mean_auroc'] == summary['mean_auroc'] and log.read_text() == before




def test_non_finite_loss_stops_and_saves_nothing(tmp_path, images):
    config = tiny_config(**{'loss.temperature': 1e-45, 'negatives.transforms': SMALL_SET,
                            'log_every': 1})
    with pytest.raises(FloatingPointError, match='non-finite loss at step 1'):
        train_lib.train(config, str(tmp_path), images, np.full(3, 1 / 3, np.float32))
    ckpts = tmp_path / 'checkpoints'
    assert not ckpts.exists() or not [p for p in ckpts.iterdir() if p.name.isdigit()]


def test_outlier_exposure_ensemble_and_authors_score(tmp_path, images):
    from unode_jax import score
    from unode_jax.evaluate import embed, evaluate_one_class
    outliers = np.full((5, 16, 16, 3), 255, np.uint8)
    config = tiny_config(**{'negatives.transforms': SMALL_SET, 'negatives.mode': 'single',
                            'negatives.outliers': 'unused-here.npz',
                            'negatives.mixup_lam': (0.02, 0.1), 'optim.num_epochs': 1})
    state = train_lib.train(config, str(tmp_path), images, np.array([0, 0, 1], np.float32),
                            outliers=outliers)
    assert int(state.step) == len(images) // config.batch_size
    with pytest.raises(ValueError, match='outlier'):
        train_lib.train(config, str(tmp_path / 'b'), images, np.ones(3, np.float32) / 3)
    plain = embed(state, images[:6], config)
    config.score.ensemble = 3
    ens = embed(state, images[:6], config)
    assert ens['z'].shape == plain['z'].shape and not np.allclose(ens['z'], plain['z'])
    np.testing.assert_array_equal(embed(state, images[:6], config)['z'], ens['z'])  # seeded
    config.score.balance = 'authors'
    bank = embed(state, images[:12], config)
    result, scores = evaluate_one_class(state, config, bank, images[12:], np.arange(12) % 2 == 0,
                                        weight=score.score_weight(bank, 'authors'))
    assert 0 <= result['auroc'] <= 1 and np.isfinite(scores['score']).all()


def test_streaming_from_host_matches_resident_training(tmp_path, images, capsys):
    """A training set over data.device_budget_mb streams from host memory, each step's
    images gathered on the host, with the same samples and draws: the same parameters."""
    config = tiny_config(**{'negatives.transforms': SMALL_SET, 'optim.num_epochs': 2,
                            'log_every': 1})
    labels = np.arange(len(images)) % 3  # the labeled setting's targets are gathered too
    weights = np.full(3, 1 / 3, np.float32)
    resident = train_lib.train(config, str(tmp_path / 'a'), images, weights, labels=labels,
                               n_pad=30)
    assert 'streaming' not in capsys.readouterr().out
    config.data.device_budget_mb = 0  # 0: always stream
    streamed = train_lib.train(config, str(tmp_path / 'b'), images, weights, labels=labels,
                               n_pad=30)
    assert 'streaming 24 training images' in capsys.readouterr().out
    assert int(streamed.step) == int(resident.step) == 2 * len(images) // config.batch_size
    for a, b in zip(jax.tree.leaves(resident.params), jax.tree.leaves(streamed.params)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    def losses(d):
        return [json.loads(l)['loss'] for l in (tmp_path / d / 'metrics.jsonl').open()]
    np.testing.assert_allclose(losses('b'), losses('a'), rtol=1e-6)
