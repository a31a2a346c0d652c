"""The processes of one run: a TPU pod's hosts, a Slurm job's tasks, or GPU machines
started by hand, joined into one JAX cluster by `initialize` before anything touches
the backend. With one process every function here is the identity or a no-op.

  initialize(...)        jax.distributed.initialize, from flags or the environment
  is_writer()            process 0 writes every file of the workdir (metrics, results,
                         plots, config.json, bank.npz, caches) and prints; the others
                         compute and wait where they need its files
  sync(name)             every process waits here for the others
  writer_first(fn, what) process 0 runs fn (filling a cache), then the others do
  agree(error, what)     process 0's failure stops every process at once
  from_writer(tree)      process 0's value of tree, on every process
  assert_same(tree, what) stops the run if tree differs between processes
  split_rows(fn, x, ...) each process applies fn to its own slice of rows of x; every
                         process gets all rows back, in order (embedding, kNN scoring)
"""
from __future__ import annotations

import glob
import os

import jax
import numpy as np

from unode_jax.runtime.errors import PeerError

# Google's PCI vendor id, and the device ids of its TPU chips (v2/v3, v4, v5p, v5e, v6e,
# 7x; as jax's own hardware check lists them). Google's other PCI devices (a GCE VM's
# gVNIC network card or NVMe disk) and /dev/vfio or /dev/accel nodes (any VFIO or
# accelerator driver: a GPU host may have them) do not make a machine a TPU VM.
GOOGLE_PCI_VENDOR = '0x1ae0'
TPU_PCI_DEVICES = ('0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076')


def tpu_chips(sys_root='/'):
    """How many TPU chips sit on this machine's PCI bus (read from sysfs under sys_root)."""
    n = 0
    for vendor in glob.glob(os.path.join(sys_root, 'sys/bus/pci/devices/*/vendor')):
        try:
            with open(vendor) as f, open(os.path.join(os.path.dirname(vendor), 'device')) as g:
                n += f.read().strip() == GOOGLE_PCI_VENDOR and g.read().strip() in TPU_PCI_DEVICES
        except OSError:  # A device that went away, or an unreadable node: not a TPU.
            continue
    return n


# How a cluster is recognised when no --coordinator_address is given; jax then reads the
# coordinator, the process count and this process's id from the environment (a Cloud TPU
# VM: its metadata; one host of TPUs is a cluster of one process).
CLUSTER_ENVIRONMENTS = (
    ('Cloud TPU', lambda env, root: bool(env.get('TPU_WORKER_HOSTNAMES')
                                         or env.get('MEGASCALE_COORDINATOR_ADDRESS')
                                         or tpu_chips(root))),
    ('Slurm', lambda env, root: int(env.get('SLURM_NTASKS', '1') or 1) > 1
     and 'SLURM_STEP_ID' in env),
    ('Open MPI', lambda env, root: int(env.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1),
)


def detected_cluster(env=None, sys_root='/'):
    """The name of the multi-process environment this process runs in, or None."""
    env = os.environ if env is None else env
    return next((name for name, found in CLUSTER_ENVIRONMENTS if found(env, sys_root)), None)


def initialize(coordinator_address=None, num_processes=None, process_id=None,
               heartbeat_timeout_s=100):
    """Joins this process to the run's JAX cluster; returns a line describing it, or None
    for a single-process run. Explicit arguments (all three) win, num_processes=1 alone
    means one process; without them a Cloud TPU VM, a Slurm step or an Open MPI job is
    detected from the environment."""
    if num_processes == 1:
        return None  # One process, whatever the environment says.
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError('--coordinator_address, --num_processes and --process_id go '
                         'together (one cluster: the same address and count on every '
                         'process, ids 0..num_processes-1)')
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ValueError(f'--process_id={process_id} is not in 0..{num_processes - 1}')
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s)
    elif detected_cluster() is not None:
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
    else:
        return None
    return (f'process {jax.process_index()} of {jax.process_count()}: '
            f'{jax.local_device_count()} of {jax.device_count()} devices')


def is_writer():
    """Process 0 of a cluster, or the only process (without touching the backend, so that
    --mode=report takes no accelerator memory)."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def process_count():
    return jax.process_count() if jax.distributed.is_initialized() else 1


def sync(name):
    """Every process waits here until all have reached the same name."""
    if process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def agree(error, what):
    """After process 0 tried `what` (error: its exception, or None): it raises its error,
    and so do the others at once (PeerError) rather than wait for it until the heartbeat
    timeout."""
    failed = error is not None
    if process_count() > 1:
        failed = bool(from_writer(np.int32(failed)))
    if error is not None:
        raise error
    if failed:
        raise PeerError(f'process 0 stopped while {what} (its error is in its output)')


def writer_first(fn, what):
    """fn() on process 0, then (once it is done) on the others: they then read what it
    wrote to a shared disk (a prepared-array cache) instead of each writing it."""
    if process_count() == 1:
        return fn()
    out = error = None
    if is_writer():
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 -- raised again by agree, on every process
            error = e
    agree(error, what)
    return out if is_writer() else fn()


def from_writer(tree):
    """Process 0's tree of numpy arrays (same structure and shapes everywhere), on every
    process."""
    if process_count() == 1:
        return tree
    from jax.experimental import multihost_utils
    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def assert_same(tree, what):
    """Raises RuntimeError unless tree (small numpy arrays) is equal on every process."""
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils
    try:
        multihost_utils.assert_equal(tree, f'{what} differ between the processes')
    except AssertionError as e:
        raise RuntimeError(str(e).splitlines()[0]) from None


def row_share(n, n_proc, index, align=1):
    """(first row, rows, rows per process) of process `index`'s share of n rows: blocks
    of `align` rows, as many per process as it takes, the last processes' shares shorter
    (or empty)."""
    blocks = -(-n // align)
    per = -(-blocks // n_proc) * align  # Rows per process, a multiple of align.
    start = min(index * per, n)
    return start, min(per, n - start), per


def split_rows(fn, x, *, align=1):
    """fn(x[rows], first_row) on this process's rows of x, gathered from every process:
    the same as fn(x, 0) when fn works row by row (a block of `align` rows is never split,
    so fn may batch by align rows). fn returns an array or a dict of arrays, one row per
    input row."""
    n_proc = process_count()
    if n_proc == 1 or not len(x):
        return fn(x, 0)
    from jax.experimental import multihost_utils
    start, n_mine, per = row_share(len(x), n_proc, jax.process_index(), align)
    # A process past the last row computes one row (for its output's shapes) and sends none.
    mine = fn(x[start:start + per] if n_mine else x[:1], start if n_mine else 0)

    def gather(a):
        a = np.asarray(a)[:n_mine]
        padded = np.zeros((per,) + a.shape[1:], a.dtype)
        padded[:n_mine] = a
        return np.asarray(multihost_utils.process_allgather(padded, tiled=True))[:len(x)]

    if isinstance(mine, dict):
        return {k: gather(v) for k, v in mine.items()}
    return gather(mine)
