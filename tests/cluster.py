"""Start N local processes of `launch.py` as one JAX cluster (tests/test_multihost.py).

Each process writes its output to logdir/p<i>.log; a cluster still running after its
time limit (generous, children.TIMEOUT_S: the limit only stops a hung cluster) is killed and
the test fails with the tail of every process's log.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from tests import children

ROOT = children.ROOT


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def process_env(devices):
    """The environment of one process: its own fake device count (the test session's
    4-device XLA_FLAGS must not leak in), CPU only, no traceback-hiding."""
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'UNODE_DEBUG')}
    env.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
               JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
    return env


def _start_one(cmd, env, log_path):
    """Popen of cmd in its own session, its stdout and stderr in log_path (kept as .log_path)."""
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    proc.log_path = log_path
    return proc


def read_log(proc):
    with open(proc.log_path, errors='replace') as f:
        return f.read()


def start(args, processes, devices, logdir, heartbeat_s=10):
    """Popen of each process of a cluster running `python launch.py *args`; stdout and
    stderr in logdir/p<i>.log."""
    port = free_port()
    procs = []
    for i in range(processes):
        cluster = ([f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
                    f'--process_id={i}', f'--heartbeat_timeout_s={heartbeat_s}']
                   if processes > 1 else [])
        procs.append(_start_one([sys.executable, children.LAUNCH, *args, *cluster],
                                process_env(devices), os.path.join(logdir, f'p{i}.log')))
    return procs


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait()


def wait(procs, timeout=children.TIMEOUT_S):
    """Every process's return code; when one is still running after `timeout` seconds, all
    are killed and the test fails with each process's output."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        kill_all(procs)
        children.timed_out(f'a cluster of {len(procs)} processes', timeout, '\n'.join(
            f'--- process {i} ({p.log_path}) ---\n{children.tail(read_log(p))}'
            for i, p in enumerate(procs)))
    return [p.returncode for p in procs]


def run(args, processes, devices, logdir, timeout=children.TIMEOUT_S, **kw):
    """Runs a cluster to the end -> (return codes, each process's output)."""
    os.makedirs(logdir, exist_ok=True)
    procs = start(args, processes, devices, logdir, **kw)
    codes = wait(procs, timeout)
    return codes, [read_log(p) for p in procs]


def run_python(code, processes, logdir, timeout=children.TIMEOUT_S):
    """Runs `python -c code COORDINATOR PROCESS_ID` as each process of a cluster of 1-device
    processes -> (return codes, outputs)."""
    os.makedirs(logdir, exist_ok=True)
    port = free_port()
    procs = [_start_one([sys.executable, '-c', code, f'127.0.0.1:{port}', str(i)],
                        process_env(1), os.path.join(logdir, f'p{i}.log'))
             for i in range(processes)]
    codes = wait(procs, timeout)
    return codes, [read_log(p) for p in procs]
