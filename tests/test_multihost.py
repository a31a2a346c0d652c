"""Multi-host: 2 processes x 2 CPU devices as one JAX cluster give the run of 1 process x 4
devices; process 0 alone writes; a rerun resumes on both; a killed peer stops the other.

Each cluster is real `launch.py` processes on this machine (tests/cluster.py), bounded by a
timeout that kills them all.
"""
import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from tests import children, cluster
from unode_jax.run import run
from unode_jax.runtime import hosts

# The quick start's config (configs/digits.py: AutoAugOOD on an untrained CNN, a held-out
# fifth for predict's threshold, the learning check) at the tiny test model's size.
OVERRIDES = {'data.normal_class': 3, 'model.name': 'tiny', 'autoaug.random_cnn': 'tiny',
             'autoaug.num_images': 20, 'batch_size': 8, 'optim.num_epochs': 2,
             'optim.warmup_epochs': 1, 'checkpoint_every': 10, 'log_every': 5,
             'progress_bar': False}


def _flags(workdir, mode):
    return ['--config=configs/digits.py', f'--workdir={workdir}', f'--mode={mode}'] + [
        f'--config.{k}={v}' for k, v in OVERRIDES.items()]


def _metrics(workdir):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def _results(workdir):
    with open(os.path.join(workdir, 'results.json')) as f:
        return json.load(f)['classes']['3']


def _one_host(workdir, autoaug_json):
    """The reference: one process with the test session's 4 devices, trained with the
    AutoAugOOD weights in `autoaug_json` (placed in its workdir, where the weights' cache
    finds them: the fingerprint covers the data and settings, not the device count)."""
    from unode_jax.configs import digits
    config = digits.get_config()
    for k, v in OVERRIDES.items():
        section, _, field = k.rpartition('.')
        setattr(config[section] if section else config, field, v)
    os.makedirs(workdir)
    shutil.copy(autoaug_json, workdir)
    run(config, str(workdir))
    return workdir


@pytest.mark.slow
def test_two_hosts_train_resume_and_score_as_one(tmp_path):
    workdir = tmp_path / 'run'
    # Streamed from host memory (each host sends its own devices' rows of each step), against
    # the reference's images resident on the devices: the same samples and draws.
    streamed = _flags(workdir, 'train') + ['--config.data.device_budget_mb=0']
    codes, logs = cluster.run(streamed, 2, 2, tmp_path / 'logs_train')
    assert codes == [0, 0], logs
    assert 'process 0 of 2: 2 of 4 devices' in logs[0] and 'streaming' in logs[0]
    # Process 0 computed AutoAugOOD (its table, not a cached one) and sent the weights to
    # process 1 (a process that trained with other weights would end with other parameters,
    # which train() checks across processes).
    assert 'AutoAugOOD weights: embedder random_cnn' in logs[0] and '(cached)' not in logs[0]
    # One writer: each step once in metrics.jsonl, and process 1 printed nothing of ours.
    steps = [m['step'] for m in _metrics(workdir)]
    assert steps == sorted(set(steps)) and steps
    assert 'class 3' not in logs[1] and 'step' not in logs[1].replace('Gloo', '')
    # The same trajectory as one host with the same global batch and the same weights. The
    # weights are the cluster's: computed afresh, one host's would differ in the last bits
    # of the embeddings (process 0 has 2 devices, not 4: XLA:CPU may sum in another order),
    # which the t-SNE amplifies (0.0974 against 0.0970 on an AVX2-only CPU), and a weight
    # that moves can move a draw of which transform makes a negative.
    weights = (workdir / 'autoaug.json').read_bytes()
    one_host = _one_host(tmp_path / 'one_host', workdir / 'autoaug.json')
    assert (one_host / 'autoaug.json').read_bytes() == weights  # reused, not recomputed
    for two, one in zip(_metrics(workdir), _metrics(one_host), strict=True):
        assert two['step'] == one['step']
        # The cross-process all-reduce sums in another order: ~1e-7 a step.
        np.testing.assert_allclose(two['loss'], one['loss'], rtol=1e-4)
    # A rerun of the same workdir resumes on both processes (at the last step: nothing to
    # train) and scores, every process embedding its share of the images.
    codes, logs = cluster.run(_flags(workdir, 'train_eval'), 2, 2, tmp_path / 'logs_eval')
    assert codes == [0, 0], logs
    assert len(_metrics(workdir)) == len(_metrics(one_host))
    two, one = _results(workdir), _results(one_host)
    # The parameters agree to the losses' ~1e-7: a few near-tied test scores may swap
    # (one swapped pair of the 61 x 538 moves an AUROC by 3e-5).
    for key in ('auroc', 'auroc_sim', 'auroc_binary', 'auroc_untrained', 'auroc_pixel_knn'):
        assert two[key] == pytest.approx(one[key], abs=1e-3), key
    assert not (tmp_path / 'run' / '.unode.lock').exists()


@pytest.mark.slow
def test_a_killed_peer_stops_the_other(tmp_path):
    workdir = tmp_path / 'run'
    long_run = _flags(workdir, 'train') + ['--config.optim.num_epochs=500',
                                          '--config.autoaug.num_images=0',
                                          '--config.negatives.weights=uniform']
    procs = cluster.start(long_run, 2, 2, str(tmp_path), heartbeat_s=5)
    try:
        deadline = time.monotonic() + children.TIMEOUT_S
        while not (workdir / 'metrics.jsonl').exists():  # Training has started.
            assert time.monotonic() < deadline and procs[0].poll() is None, (
                f'never trained: {children.tail(cluster.read_log(procs[0]))}')
            time.sleep(0.5)
        os.killpg(procs[1].pid, signal.SIGKILL)
        # Process 0 stops (its 500 epochs would take hours) once the coordination service
        # misses process 1's heartbeats; how soon depends on the machine's load, so no
        # time is asserted beyond the wait's limit.
        code, = cluster.wait(procs[:1])
        assert code != 0
        log = cluster.read_log(procs[0])
        assert 'another task died' in log  # JAX's coordination service says why.
        assert 'Extension modules' not in log  # No faulthandler dump without --debug.
    finally:
        cluster.kill_all(procs)


def test_cluster_flags_and_detection():
    with pytest.raises(ValueError, match='go together'):
        hosts.initialize('127.0.0.1:1', None, 0)
    with pytest.raises(ValueError, match='not in 0..1'):
        hosts.initialize('127.0.0.1:1', 2, 2)
    assert hosts.initialize('127.0.0.1:1', 1, 0) is None  # One process: no cluster.
    assert hosts.initialize() is None
    assert hosts.detected_cluster({}) is None
    assert hosts.detected_cluster({'SLURM_NTASKS': '4', 'SLURM_STEP_ID': '0'}) == 'Slurm'
    assert hosts.detected_cluster({'SLURM_NTASKS': '4'}) is None  # sbatch, not srun
    assert hosts.detected_cluster({'TPU_WORKER_HOSTNAMES': 'a,b'}) == 'Cloud TPU'
    assert hosts.initialize(num_processes=1) is None  # Opts out of a detected cluster.
    assert hosts.detected_cluster({'OMPI_COMM_WORLD_SIZE': '2'}) == 'Open MPI'
    # One process: every helper is the identity.
    x = np.arange(10.0)
    assert hosts.from_writer(x) is x
    np.testing.assert_array_equal(hosts.split_rows(lambda r, first: r * 2, x, align=3), x * 2)
    assert hosts.writer_first(lambda: 7, 'name') == 7 and hosts.is_writer()


@pytest.mark.parametrize('n,n_proc,align', [(10, 2, 1), (10, 3, 4), (3, 4, 1), (257, 4, 128),
                                            (1, 2, 5), (8, 2, 4)])
def test_row_shares_cover_every_row_once_in_order(n, n_proc, align):
    rows = []
    for i in range(n_proc):
        start, count, per = hosts.row_share(n, n_proc, i, align)
        assert count <= per and per % align == 0 and (start % align == 0 or not count)
        rows += list(range(start, start + count))
    assert rows == list(range(n))


def _fake_machine(root, pci=(), dev=()):
    """A sysfs PCI bus with (vendor, device) ids, and /dev nodes, under root."""
    for i, (vendor, device) in enumerate(pci):
        d = root / 'sys/bus/pci/devices' / f'0000:00:{i:02x}.0'
        d.mkdir(parents=True)
        (d / 'vendor').write_text(vendor + '\n')
        (d / 'device').write_text(device + '\n')
    for node in dev:
        (root / node).parent.mkdir(parents=True, exist_ok=True)
        (root / node).write_text('')
    return str(root)


def test_a_tpu_vm_is_told_from_a_gpu_machine_by_its_pci_devices(tmp_path):
    gvnic, nvme, h200 = ('0x1ae0', '0x0042'), ('0x1ae0', '0x001f'), ('0x10de', '0x2335')
    # A GCE GPU VM: Google's network card and disk, an NVIDIA GPU, VFIO and accel nodes.
    gpu_vm = _fake_machine(tmp_path / 'gpu', pci=[gvnic, nvme, h200],
                           dev=['dev/vfio/0', 'dev/accel0', 'dev/nvidia0'])
    assert hosts.tpu_chips(gpu_vm) == 0 and hosts.detected_cluster({}, gpu_vm) is None
    # A v4 host (four chips) and a v5e host: a Cloud TPU from the bus alone.
    v4 = _fake_machine(tmp_path / 'v4', pci=[gvnic] + [('0x1ae0', '0x005e')] * 4)
    assert hosts.tpu_chips(v4) == 4 and hosts.detected_cluster({}, v4) == 'Cloud TPU'
    v5e = _fake_machine(tmp_path / 'v5e', pci=[('0x1ae0', '0x0063')])
    assert hosts.detected_cluster({}, v5e) == 'Cloud TPU'
    # No sysfs at all (a container without it): nothing detected, no error.
    assert hosts.tpu_chips(str(tmp_path / 'none')) == 0
    # A device node that cannot be read is skipped.
    broken = tmp_path / 'broken/sys/bus/pci/devices/x'
    broken.mkdir(parents=True)
    (broken / 'vendor').write_text('0x1ae0')
    assert hosts.tpu_chips(str(tmp_path / 'broken')) == 0
    # This machine (a CPU machine of CI's kind) is no TPU VM.
    assert hosts.tpu_chips() == 0


HELPERS = """
import sys
import numpy as np
from unode_jax.runtime import hosts
hosts.initialize(sys.argv[1], 2, int(sys.argv[2]))
me = int(sys.argv[2])
rows = hosts.split_rows(lambda r, first: {'x': r * 2, 'first': r * 0 + first}, np.arange(7.0),
                        align=2)
print('rows', rows['x'].tolist(), rows['first'].tolist())
print('from_writer', hosts.from_writer(np.float32([me + 5])).tolist())
print('writer_first', hosts.writer_first(lambda: me, 'w'))
hosts.assert_same({'a': np.float32([1, 2])}, 'equal arrays')
try:
    hosts.assert_same({'a': np.float32([me])}, 'the ids')
except RuntimeError as e:
    print('error:', e)
for name, attempt in (('agree', lambda: hosts.agree(ValueError('boom') if me == 0 else None,
                                                     'testing')),
                      ('first', lambda: hosts.writer_first(lambda: 1 / me, 'dividing'))):
    try:
        attempt()
    except Exception as e:
        print(name, type(e).__name__, e)
"""


def test_helpers_across_two_processes(tmp_path):
    """split_rows gathers every row in order (each process fed its own share), from_writer
    sends process 0's value, assert_same stops on a difference, on both processes."""
    codes, logs = cluster.run_python(HELPERS, 2, str(tmp_path))
    assert codes == [0, 0], logs
    for me, log in enumerate(logs):
        assert 'rows [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0] [0.0, 0.0, 0.0, 0.0, 4.0, 4.0, 4.0]' in log
        assert 'from_writer [5.0]' in log and f'writer_first {me}' in log
        assert 'error: the ids differ between the processes' in log
    # Process 0's failure stops both at once: its own error there, PeerError on the other.
    assert 'agree ValueError boom' in logs[0] and 'first ZeroDivisionError' in logs[0]
    assert 'agree PeerError process 0 stopped while testing' in logs[1]
    assert 'first PeerError process 0 stopped while dividing' in logs[1]


def test_a_busy_workdir_stops_every_process_at_once(tmp_path):
    """Process 0 cannot take the lock: it says why, and process 1 stops too instead of
    waiting for it until the heartbeat timeout."""
    from unode_jax.runtime.lock import workdir_lock
    workdir = tmp_path / 'run'
    with workdir_lock(str(workdir), 'train'):
        codes, logs = cluster.run(_flags(workdir, 'train'), 2, 1, tmp_path / 'logs')
    assert codes == [1, 1], logs
    assert 'is in use by process' in logs[0]
    assert f'error: process 0 stopped while taking the lock of {workdir}' in logs[1]
