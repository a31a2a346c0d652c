"""End-to-end training: device-count invariance, batch sampling, resume, launch.py."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests import children
from tests.tiny_config import tiny_config
from unode_jax.training import devices as devices_lib, optim, sampling, train as train_lib
from unode_jax.training.checkpoint import truncate_metrics

SMALL_SET = ('rotation', 'cutout', 'mixup')  # fewer branches: faster compiles in tests
RESUMED_BITWISE = ('a resumed run ends with the unbroken run\'s parameters bit for bit on a CPU '
                   '(docs/reliability.md; a GPU sums in another order each run)')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_steps(config, images, n_dev, k):
    devices = jax.local_devices()[:n_dev]
    state = train_lib.create_train_state(jax.random.key(0), config, images.shape[1], train_lib.AXIS)
    state = state.replace(opt_state=optim.set_steps_per_epoch(state.opt_state, len(images) // 8))
    p_step = train_lib.make_p_train_step(config, devices)
    state_r = devices_lib.replicate(state, devices)
    batch_r = devices_lib.replicate(train_lib.device_batch(
        images, np.ones(len(images), np.int32), np.full(len(SMALL_SET), 1 / len(SMALL_SET)),
        images[:1], n_valid=len(images)), devices)
    history = []
    for _ in range(k):
        state_r, m = p_step(state_r, batch_r)
        history.append({name: float(v[0]) for name, v in m.items()})
    return devices_lib.unreplicate(state_r), history


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)


@pytest.mark.devices(4)
@pytest.mark.parametrize('kind, mode, per, n_devs', [('paper', 'compose', 'batch', (2, 4)),
                                                     ('authors', 'single', 'sample', (4,))])
@pytest.mark.slow
def test_devices_give_the_same_steps(images, kind, mode, per, n_devs):
    config = tiny_config(**{'loss.kind': kind, 'negatives.mode': mode, 'negatives.per': per,
                            'negatives.per_view': kind == 'authors',
                            'negatives.transforms': SMALL_SET})
    # Other device counts draw the same samples and transforms; only float sums differ (the
    # cross-device gradient and BatchNorm reductions, and XLA:CPU's kernels for other
    # shapes). Measured over these 3 steps on an AVX2-only CPU, natively and with
    # --xla_cpu_max_isa=AVX: the losses within 5e-7 relative, the gradient norm within 9.4e-4
    # (a rounding that flips a ReLU input's sign switches that unit's gradient: 5.7e-5 at
    # step 1, growing with the updates). Other draws (seed 1) move the losses by 3.6e-3 to
    # 8e-2 and the gradient norm by 1.3e-2 to 0.7, and a wrong cross-device sum by a factor.
    init = jax.device_get(train_lib.create_train_state(
        jax.random.key(0), config, images.shape[1], train_lib.AXIS).params)  # run_steps' start
    ref_state, ref = run_steps(config, images, 1, 3)
    for n_dev in n_devs:
        state, hist = run_steps(config, images, n_dev, 3)
        for a, b in zip(ref, hist):
            for name, rtol in (('loss', 1e-4), ('loss_con', 1e-4), ('loss_ce', 1e-4),
                               ('lr', 1e-6), ('grad_norm', 5e-3)):
                np.testing.assert_allclose(b[name], a[name], rtol=rtol,
                                           err_msg=f'{name}, {n_dev} devices')
        # Each parameter's 3-step update, against the 1-device run's, relative to its size:
        # measured within 5.6e-3 (the 'authors' BatchNorm biases with --xla_cpu_max_isa=AVX:
        # their gradients are sums that nearly cancel, so rounding counts), 2e-5 elsewhere;
        # seed 1's draws move every update by at least 6.9e-2.
        for p0, a, b in zip(jax.tree.leaves(init), jax.tree.leaves(ref_state.params),
                            jax.tree.leaves(state.params)):
            da, db = np.asarray(a) - p0, np.asarray(b) - p0
            assert np.linalg.norm(db - da) <= 2e-2 * np.linalg.norm(da), n_dev
    assert np.isfinite(ref[-1]['loss'])


def test_batch_indices_visit_every_image_once_per_epoch():
    n, n_pad, g = 10, 16, 4
    rng = jax.random.key(3)
    idx = np.concatenate([
        np.asarray(sampling.batch_indices(rng, s, jnp.arange(g), n, n_pad, g)) for s in range(5)])
    # 5 steps x 4 = 20 samples = exactly two epochs of the 10 valid rows.
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:]) == list(range(10))
    assert not np.array_equal(idx[:10], idx[10:])  # each epoch has its own order


def _command(workdir, *overrides):
    return [sys.executable, os.path.join(ROOT, 'launch.py'),
            '--config=' + os.path.join(ROOT, 'configs/digits.py'), f'--workdir={workdir}',
            *overrides]


def _launch(workdir, *overrides, env=None):
    return children.run(_command(workdir, *overrides), env=env)


RESUME_FLAGS = ('--mode=train', '--config.data.normal_class=3', '--config.optim.num_epochs=4',
                '--config.checkpoint_every=2', '--config.log_every=1',
                '--config.progress_bar=False', '--config.data.image_size=16')
TMP_SUFFIX = '.orbax-checkpoint-tmp'  # orbax writes <step><TMP_SUFFIX>..., then renames it


def _final_params(workdir):
    import orbax.checkpoint as ocp
    path = os.path.join(workdir, 'checkpoints')
    mgr = ocp.CheckpointManager(path, item_names=('state', 'meta'))
    step = mgr.latest_step()
    tree = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
    mgr.close()
    return step, tree['params']


def _latest_step(workdir):
    """The step a resumed run restores (None: no complete checkpoint)."""
    import orbax.checkpoint as ocp
    mgr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'meta'))
    step = mgr.latest_step()
    mgr.close()
    return step


def _checkpoint_names(workdir):
    path = os.path.join(workdir, 'checkpoints')
    return os.listdir(path) if os.path.isdir(path) else []


@pytest.fixture(scope='module')
def launch_env(tmp_path_factory):
    """The resume tests' launches share a persistent XLA compilation cache: every process
    after the first loads the train step instead of compiling it (~40 s each on 2 cores)."""
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('xla')),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


@pytest.fixture(scope='module')
def straight(tmp_path_factory, launch_env):
    """RESUME_FLAGS trained without interruption: (workdir, final step, final parameters)."""
    workdir = tmp_path_factory.mktemp('straight')
    r = _launch(workdir, *RESUME_FLAGS, env=launch_env)
    assert r.returncode == 0, r.stderr[-3000:]
    return (workdir, *_final_params(workdir))


def _kill_when(workdir, env, seen):
    """Launches RESUME_FLAGS in workdir and SIGKILLs it as soon as seen() returns something.

    Returns (the exit code, what seen() returned: None if the run ended first, what the
    run printed). A run still going after children.TIMEOUT_S with nothing seen fails the
    test with its output."""
    log_path = f'{workdir}.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(_command(workdir, *RESUME_FLAGS), cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    found, deadline = None, time.monotonic() + children.TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            found = seen()
            if found is not None:
                break
            time.sleep(0.002)
    finally:
        hung = proc.poll() is None and found is None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with open(log_path) as f:
        output = f.read()
    if hung:
        children.timed_out(' '.join(proc.args), children.TIMEOUT_S, output)
    return proc.returncode, found, children.tail(output)


def _assert_resumed_as_straight(workdir, straight, env, restored, said=''):
    """Relaunched, the killed run resumes from step `restored` (the killed run's log lines up
    to it are kept as they were, where a fresh start would rewrite them) and finishes with
    the uninterrupted run's step and parameters, each step logged once; its stdout holds
    `said`."""
    metrics = workdir / 'metrics.jsonl'
    kept = metrics.read_text().splitlines()[:restored]  # log_every=1: line i is step i + 1
    assert [json.loads(l)['step'] for l in kept] == list(range(1, restored + 1))
    r = _launch(workdir, *RESUME_FLAGS, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert said in r.stdout, r.stdout[-3000:]
    _, step_a, a = straight
    step_b, b = _final_params(workdir)
    assert step_a == step_b
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    lines = metrics.read_text().splitlines()
    assert [json.loads(l)['step'] for l in lines] == list(range(1, step_a + 1))
    assert lines[:restored] == kept


@pytest.mark.slow
@pytest.mark.cpu_only(RESUMED_BITWISE)
def test_kill_and_resume_ends_with_the_same_parameters(tmp_path, straight, launch_env):
    killed = tmp_path / 'killed'
    metrics = killed / 'metrics.jsonl'

    def trained_and_saved():  # 5 logged steps, and a complete checkpoint to resume from
        logged = metrics.exists() and len(metrics.read_text().splitlines()) >= 5
        return logged and any(n.isdigit() for n in _checkpoint_names(killed)) or None

    rc, found, output = _kill_when(killed, launch_env, trained_and_saved)
    _, final, _ = straight
    # The kill landed during training: SIGKILL'd, with a checkpoint short of the last step.
    assert found, f'the run ended (exit code {rc}) before 5 steps and a checkpoint: {output}'
    assert rc == -signal.SIGKILL, f'the run ended (exit code {rc}) before it was killed'
    restored = _latest_step(killed)
    assert restored is not None and 2 <= restored < final, (restored, final)
    _assert_resumed_as_straight(killed, straight, launch_env, restored,
                                'taking over the lock of process')  # the killed run's

    # --mode=eval scores the finished run from its checkpoint, without training.
    r = _launch(killed, *RESUME_FLAGS, '--mode=eval', env=launch_env)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((killed / 'results.json').read_text())['classes']['3']
    # Digit 3 against the other digits: 0.93 after these 24 steps; a flipped score gives 0.07.
    assert result['steps'] == final and result['auroc'] > 0.8, result
    assert 'AUROC' in r.stdout
    # --mode=report needs no config: everything comes from the saved scores.
    r = children.launch('--mode=report', f'--workdir={killed}')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'FPR@95' in r.stdout and (killed / 'results.md').exists()


@pytest.mark.slow
@pytest.mark.cpu_only(RESUMED_BITWISE)
def test_kill_during_a_checkpoint_write_resumes_from_the_last_complete_one(
        tmp_path, straight, launch_env):
    killed = tmp_path / 'killed'
    killed.mkdir()
    # The straight run's AutoAugOOD weights (same data and settings: a cache hit) spare the
    # killed run the t-SNE, so it reaches its checkpoints sooner.
    shutil.copy(straight[0] / 'autoaug.json', killed / 'autoaug.json')

    def partial_write():  # a step being written after a complete one: the kill's target
        names = _checkpoint_names(killed)
        partial = [n for n in names if TMP_SUFFIX in n]
        return partial[0] if partial and any(n.isdigit() for n in names) else None

    for _ in range(3):  # orbax takes ~0.5 s to write one: the 2 ms poll almost always wins
        rc, partial, output = _kill_when(killed, launch_env, partial_write)
        assert partial is not None, (
            f'no {TMP_SUFFIX} folder was seen in {killed / "checkpoints"} before the run '
            f'ended (exit code {rc}): orbax no longer writes checkpoints through one? {output}')
        assert rc == -signal.SIGKILL, f'the run ended (exit code {rc}) before it was killed'
        if partial in _checkpoint_names(killed):
            break  # the kill landed while the step was half written
    else:
        pytest.fail('three kills in a row came after the checkpoint write they aimed at')
    _, final, _ = straight
    restored = _latest_step(killed)
    # The half-written step is not restored: the one before it is.
    assert restored is not None and restored < int(partial.split('.')[0]) <= final, (
        restored, partial)
    _assert_resumed_as_straight(killed, straight, launch_env, restored)
    assert not [n for n in _checkpoint_names(killed) if TMP_SUFFIX in n]  # rewritten, renamed


def _mount_tmpfs(path, size):
    """Mounts (or remounts) a tmpfs of `size` at path; False where this machine forbids it."""
    path.mkdir(exist_ok=True)
    opts = f'remount,size={size}' if os.path.ismount(path) else f'size={size}'
    try:
        return subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', str(path)],
                              capture_output=True).returncode == 0
    except OSError:  # No mount command.
        return False


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB filesystem, tmp_path/disk: the first of the resume runs' checkpoints (5.5 MB)
    fits, the second does not. Skips where the tests may not mount one (not root)."""
    disk = tmp_path / 'disk'
    if not _mount_tmpfs(disk, '8m'):
        pytest.skip('mounting a tmpfs needs root (the injected full disk runs everywhere)')
    yield disk
    subprocess.run(['umount', '-l', str(disk)], capture_output=True)


FULL_DISK_LINE = (r'error: no space left on device writing checkpoint 4 in (\S+)/checkpoints: '
                  r'free some space and rerun the same command \(it resumes from step 2\)\n')


@pytest.mark.slow
@pytest.mark.cpu_only(RESUMED_BITWISE)
@pytest.mark.parametrize('disk', ['tmpfs', 'injected'])
def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path, straight, launch_env, disk,
                                                       request):
    """The disk fills up while checkpoint 4 is written (checkpoint 2 was): stderr is one line
    naming it, the workdir and the step a rerun resumes from, and once there is space again
    the same command ends as the unbroken run. 'tmpfs' is a real full filesystem (root only);
    'injected' fails orbax's writes as tensorstore does (tests/fixtures/full_disk_launch.py)."""
    if disk == 'tmpfs':
        workdir = request.getfixturevalue('small_disk') / 'run'
        cmd, env = _command(workdir, *RESUME_FLAGS), launch_env
    else:
        workdir = tmp_path / 'run'
        cmd = [sys.executable, os.path.join(ROOT, 'tests', 'fixtures', 'full_disk_launch.py'),
               *_command(workdir, *RESUME_FLAGS)[2:]]
        env = dict(launch_env, UNODE_TEST_FULL_AT='4')
    workdir.mkdir()
    shutil.copy(straight[0] / 'autoaug.json', workdir)  # No t-SNE: a cache hit.
    r = children.run(cmd, env=env)
    assert r.returncode == 1, r.stderr[-3000:]
    found = re.fullmatch(FULL_DISK_LINE, r.stderr)
    assert found and found.group(1) == str(workdir), r.stderr[-3000:]
    assert _latest_step(workdir) == 2
    if disk == 'tmpfs':
        assert _mount_tmpfs(workdir.parent, '64m')  # Space freed.
    _assert_resumed_as_straight(workdir, straight, launch_env, 2)


@pytest.mark.slow
@pytest.mark.cpu_only(RESUMED_BITWISE)
def test_ctrl_c_stops_with_one_line_and_the_rerun_resumes(tmp_path, straight, launch_env):
    for attempt in range(3):
        stopped = tmp_path / f'stopped{attempt}'
        metrics = stopped / 'metrics.jsonl'
        proc = subprocess.Popen(_command(stopped, *RESUME_FLAGS), cwd=ROOT, env=launch_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Ctrl-C at step 5 or so of 24, once checkpoints 2 and 4 were handed to orbax: the
        # stop finishes them first. Waiting for a checkpoint to appear on disk as well let
        # a quick run finish its 24 steps first (seen once in a CI run).
        deadline = time.monotonic() + children.TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline and not (
                metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        out, err = children.communicate(proc)
        if proc.returncode != 0:
            break  # Stopped by the Ctrl-C, not finished before it.
    else:
        pytest.fail('three runs in a row finished their 24 steps before the Ctrl-C')
    assert proc.returncode == 1 and err.count('\n') == 1, err[-3000:]
    assert re.fullmatch(r'error: stopped \(Ctrl-C\) at step \d+ of \d+ in \S+: rerun the same '
                        r'command to resume from step \d+\n', err), err
    assert not (stopped / '.unode.lock').exists()  # released on the way out
    restored = _latest_step(stopped)
    assert f'resume from step {restored}' in err
    _assert_resumed_as_straight(stopped, straight, launch_env, restored)


@pytest.mark.slow
@pytest.mark.cpu_only(RESUMED_BITWISE)
def test_ctrl_c_while_the_loop_waits_for_a_checkpoint_still_stops(tmp_path, straight,
                                                                   launch_env):
    """Ctrl-C while the next save waits in orbax for checkpoint 2 to finish (orbax catches
    BaseException there, and training used to go on to the end): the run stops at the next
    step boundary with the one line, and the rerun ends as the unbroken run."""
    workdir = tmp_path / 'run'
    workdir.mkdir()
    shutil.copy(straight[0] / 'autoaug.json', workdir)  # No t-SNE: a cache hit.
    cmd = [sys.executable, os.path.join(ROOT, 'tests', 'fixtures',
                                        'ctrl_c_in_checkpoint_wait_launch.py'),
           *_command(workdir, *RESUME_FLAGS)[2:]]
    r = children.run(cmd, env=dict(launch_env, UNODE_TEST_SIGINT_AT='2'))
    assert r.returncode == 1 and r.stderr.count('\n') == 1, (r.stderr[-3000:],
                                                             r.stdout[-3000:])
    found = re.fullmatch(r'error: stopped \(Ctrl-C\) at step \d+ of 24 in \S+: rerun the same '
                         r'command to resume from step (\d+)\n', r.stderr)
    assert found, r.stderr
    restored = int(found.group(1))
    assert restored == _latest_step(workdir) and restored in (2, 4)
    _assert_resumed_as_straight(workdir, straight, launch_env, restored)


@pytest.mark.slow  # The straight run it copies takes ~35 s, each rerun ~10 s.
@pytest.mark.cpu_only(RESUMED_BITWISE)
@pytest.mark.parametrize('damage', ['truncate an array file', 'delete _METADATA'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
        tmp_path, straight, launch_env, damage):
    workdir = tmp_path / 'damaged'
    shutil.copytree(straight[0], workdir)
    steps = sorted(int(n) for n in _checkpoint_names(workdir) if n.isdigit())
    newest = workdir / 'checkpoints' / str(steps[-1]) / 'state'
    if damage == 'delete _METADATA':
        (newest / '_METADATA').unlink()
    else:
        data = max((p for p in newest.rglob('*') if p.is_file() and p.parent.name == 'd'),
                   key=lambda p: p.stat().st_size)
        data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    # The rerun restores the step before, says so in one line, and ends as the unbroken run.
    _assert_resumed_as_straight(workdir, straight, launch_env, steps[-2],
                                f'checkpoint {steps[-1]} in ')
    assert os.listdir(workdir / 'checkpoints_unreadable') == [str(steps[-1])]


@pytest.mark.slow
def test_bad_override_fails_with_one_line(tmp_path):
    for flag, word in [('--config.data.name=nope', 'data.name'),
                       ('--config.batch_size=0', 'batch_size'),
                       ('--config.data.normal_class=12', 'normal_class'),
                       # --classes reaches run(): the dataset's classes are checked there.
                       ('--classes=3,12', 'digits has classes 0..9, got [12]')]:
        r = _launch(tmp_path / 'bad', flag)
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith('error:') and word in last, r.stderr[-2000:]
    # Flags absl or the config cannot parse: the whole of stderr is one line.
    for flag, want in [('--config.foo=1', '--config.foo: no such field in the config'),
                       ('--config.optim.peak_lrr=1', 'no such field in the config; nearest: '
                                                     'optim.peak_lr'),
                       ('--config.optim.peak_lr=x', 'could not convert'),
                       ('--nope=1', "Unknown command line flag 'nope'"),
                       ('--classes=0,six', '--classes takes class numbers, e.g. --classes=0,6,9, '
                                           'got 0,six')]:
        r = _launch(tmp_path / 'bad', flag)
        assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr[-2000:]
        assert r.stderr.startswith('error: ') and want in r.stderr, r.stderr
    r = children.launch('--config=configs/nope.py', f'--workdir={tmp_path / "bad"}')
    assert r.returncode == 1 and r.stderr.startswith(
        'error: --config=configs/nope.py: no such file or packaged config (arrays, cifar10, ')
    assert r.stderr.count('\n') == 1 and ' digits, ' in r.stderr
    assert not (tmp_path / 'bad').exists()  # nothing written
    # A packaged config by its bare name: read (its validation runs), from any directory.
    r = children.launch('--config=digits', f'--workdir={tmp_path / "bad"}',
                        '--config.batch_size=0', cwd=tmp_path)
    assert r.returncode == 1 and r.stderr == 'error: batch_size must be positive, got 0\n', \
        r.stderr[-2000:]
    assert not (tmp_path / 'bad').exists()


@pytest.mark.slow
def test_quick_start_detects_novel_digits_and_sweep_resumes(tmp_path, monkeypatch):
    from unode_jax.configs import digits
    from unode_jax.run import run
    trained, real_train = [], train_lib.train  # the class folder of each call to train

    def recording_train(config, workdir, *args, **kwargs):
        trained.append(os.path.basename(workdir))
        return real_train(config, workdir, *args, **kwargs)
    monkeypatch.setattr(train_lib, 'train', recording_train)  # as run.py calls it
    config = digits.get_config()
    config.progress_bar = False
    config.optim.num_epochs = 10  # the quick start's 20, shortened for the test
    # --mode=all: the sweep, its reports, then every corruption of the test set (Table 2).
    config.corruptions.names = ('gaussian_noise', 'rotate')
    summary = run(config, str(tmp_path), mode='all', classes=(0, 1))
    assert trained == ['class_0', 'class_1']
    # The reported mean AUROC is sklearn's (normal = the positive class) of each class's
    # saved scores, averaged over the classes: the same sums on the same inputs (its cast of
    # the scores to float64 keeps their order and ties), so equal to the bit.
    class_scores = [np.load(tmp_path / f'class_{c}' / 'scores.npz') for c in (0, 1)]
    aurocs = [roc_auc_score(s['is_normal'], s['score']) for s in class_scores]
    assert summary['mean_auroc'] == np.mean(aurocs), (aurocs, summary['mean_auroc'])
    # Measured on this run (10 epochs, seed 0): class 0 0.99997, class 1 0.99488. Seeds 1-4
    # of the same config, a far larger change than the last bits another CPU rounds
    # differently, gave class 0 0.9972-0.9999, class 1 0.9869-0.9968 and a mean of
    # 0.9933-0.9976: each floor sits at least the seeds' spread below the lowest of them.
    # (Trained 1 epoch instead of 10: class 1 0.944, below its floor.)
    assert min(aurocs) > 0.975 and np.mean(aurocs) > 0.985, aurocs
    for c in ('0', '1'):
        r = summary['classes'][c]
        assert r['n_test_inliers'] + r['n_test_outliers'] == 599
        assert r['holdout'] == 0.2  # the quick start holds out a fifth for predict's threshold
    saved = json.loads((tmp_path / 'results.json').read_text())
    assert saved['mean_auroc'] == pytest.approx(summary['mean_auroc'])
    assert saved['autoaug_embedder']['name'] == 'random_cnn'  # the quick start's offline weights
    for c in ('0', '1'):
        r = summary['classes'][c]
        # Chance: FPR@95 0.95, AUPR-In the inlier share (0.1), AUPR-Out the outliers' (0.9);
        # measured: under 0.08, over 0.95 and over 0.998.
        assert r['fpr95'] < 0.5 and r['aupr_in'] > 0.5 and r['aupr_out'] > 0.95, r
        assert r['negative_weights_source'] == 'auto' and r['autoaug_embedder']['name'] == 'random_cnn'
        assert r['compute_dtype'] == 'float32'  # model.dtype='auto' on a CPU
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
    # A rerun finds both classes finished (their results.json) and trains neither.
    log = tmp_path / 'class_0' / 'metrics.jsonl'
    before = log.read_text()
    again = run(config, str(tmp_path), classes=(0, 1))
    assert trained == ['class_0', 'class_1'], trained
    assert again['mean_auroc'] == summary['mean_auroc'] and log.read_text() == before
    # A class stopped before its results.json is trained again, from its last checkpoint:
    # its final one here, so no step is rerun (nor logged again).
    log = tmp_path / 'class_1' / 'metrics.jsonl'
    before = log.read_text()
    (tmp_path / 'class_1' / 'results.json').unlink()
    again = run(config, str(tmp_path), classes=(0, 1))
    assert trained == ['class_0', 'class_1', 'class_1'], trained
    assert log.read_text() == before
    assert again['classes']['1']['steps'] == summary['classes']['1']['steps']
    assert again['classes']['1']['auroc'] == summary['classes']['1']['auroc']




@pytest.mark.slow
def test_non_finite_loss_stops_and_saves_nothing(tmp_path, images):
    config = tiny_config(**{'loss.temperature': 1e-45, 'negatives.transforms': SMALL_SET,
                            'log_every': 1})
    with pytest.raises(FloatingPointError, match='non-finite loss at step 1'):
        train_lib.train(config, str(tmp_path), images, np.full(3, 1 / 3, np.float32))
    ckpts = tmp_path / 'checkpoints'
    assert not ckpts.exists() or not [p for p in ckpts.iterdir() if p.name.isdigit()]


@pytest.mark.slow
def test_outlier_exposure_ensemble_and_authors_score(tmp_path, images):
    from unode_jax.evaluation import metrics, score
    from unode_jax.evaluation.evaluate import embed, evaluate_one_class
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
    x = np.concatenate([images[12:], outliers])  # held-out inliers, then the outliers
    is_normal = np.arange(len(x)) < 12
    weight = score.score_weight(bank, 'authors')
    result, scores = evaluate_one_class(state, config, bank, x, is_normal, weight=weight)
    # The authors' score of the ensembled embeddings: <z, z_m/|z_m|> / mean |z_train| plus
    # the negative class's logit over its training mean (the weight).
    test = embed(state, x, config)
    z, zb = test['z'], bank['z'] / np.linalg.norm(bank['z'], axis=1, keepdims=True)
    sim = (z @ zb.T).max(1) / np.linalg.norm(bank['z'], axis=1).mean()
    assert weight == pytest.approx(1 / bank['logits'][:, 0].mean())
    np.testing.assert_allclose(scores['score'], sim + weight * test['logits'][:, 0], rtol=1e-4,
                               atol=1e-4)
    assert result['auroc'] == metrics.auroc(is_normal, scores['score'])
    assert result['n_test_inliers'] == 12 and result['n_test_outliers'] == len(outliers)


@pytest.mark.slow
def test_streaming_from_host_matches_resident_training(tmp_path, images, capsys, monkeypatch):
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
    # On a CPU the same program on the same rows; a GPU's scatter-adds sum in another order
    # each run (docs/reliability.md), which 6 steps keep within 1e-3.
    tol = dict(rtol=1e-6, atol=1e-7) if jax.default_backend() == 'cpu' else dict(rtol=1e-3,
                                                                                 atol=1e-5)
    for a, b in zip(jax.tree.leaves(resident.params), jax.tree.leaves(streamed.params)):
        np.testing.assert_allclose(b, a, **tol)
    def losses(d):
        return [json.loads(l)['loss'] for l in (tmp_path / d / 'metrics.jsonl').open()]
    np.testing.assert_allclose(losses('b'), losses('a'), rtol=tol['rtol'])
    # Where jax has no CPU backend (JAX_PLATFORMS=cuda or tpu), the indices are computed on
    # the first local device: here that is the CPU again, so the same program gives the
    # same bits.
    real = jax.local_devices

    def no_cpu_backend(*args, backend=None, **kwargs):
        if backend == 'cpu':
            raise RuntimeError("Unknown backend cpu. Available backends are ['cuda']")
        return real(*args, backend=backend, **kwargs)
    monkeypatch.setattr(jax, 'local_devices', no_cpu_backend)
    assert sampling.index_device() == real()[0]
    without_cpu = train_lib.train(config, str(tmp_path / 'c'), images, weights, labels=labels,
                                  n_pad=30)
    cpu = jax.default_backend() == 'cpu'
    for a, b in zip(jax.tree.leaves(streamed.params), jax.tree.leaves(without_cpu.params)):
        np.testing.assert_allclose(b, a, **(dict(rtol=0, atol=0) if cpu else tol))


def test_prefetch_puts_each_batch_ahead_on_the_devices_as_pmap_lays_them_out():
    """sampling.prefetch: jax.device_put to the local devices, `size` batches in flight,
    in order, with the sharding of pmap's own outputs (no recompile of the step)."""
    n = jax.local_device_count()
    pulled = []

    def batches():
        for i in range(5):
            pulled.append(i)
            yield dict(x=np.full((n, 2), i, np.int32))
    it = sampling.prefetch(batches(), train_lib.AXIS, size=2)
    first = next(it)
    assert pulled == [0, 1]  # the next batch is on the devices while a step uses this one
    rest = list(it)
    assert [int(b['x'][0, 0]) for b in [first] + rest] == [0, 1, 2, 3, 4]
    pmapped = jax.pmap(lambda x: x, axis_name=train_lib.AXIS)(np.zeros((n, 2), np.int32))
    assert first['x'].sharding == pmapped.sharding
    assert isinstance(first['x'], jax.Array) and first['x'].shape == (n, 2)


def test_resume_drops_metrics_past_the_checkpoint_and_a_half_written_line(tmp_path):
    """A kill can leave metrics.jsonl lines past the restored step and a last line cut short:
    resuming keeps the lines up to the checkpoint and never fails on the cut one."""
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n\n'
                    '{"step": 3, "loss": 0.8}\n{"step": 4, "lo')
    truncate_metrics(str(path), 2)
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n'


def test_help_lists_the_command_lines_flags(tmp_path):
    """--help shows unode_jax/cli.py's usage and its own flags, as absl shows a program's."""
    r = children.launch('--help', cwd=tmp_path)  # absl's --help exits with 1
    assert 'unode-jax --config=digits' in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    for flag in ('--config:', '--workdir:', '--mode:', '--format:', '--images:'):
        assert flag in r.stdout, flag
    # python -m unode_jax: the same command.
    r = children.run([sys.executable, '-m', 'unode_jax', '--config=nope', '--workdir=x'])
    assert r.returncode == 1 and r.stderr.startswith('error: --config=nope: no such file or '
                                                     'packaged config'), r.stderr[-2000:]
