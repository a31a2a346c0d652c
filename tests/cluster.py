"""Start N local processes of `launch.py` as one JAX cluster (tests/test_multihost.py)."""
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def start(args, processes, devices, logdir, heartbeat_s=10):
    """Popen of each process of a cluster running `python launch.py *args`; stdout and
    stderr in logdir/p<i>.log."""
    port = free_port()
    procs = []
    for i in range(processes):
        cluster = ([f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
                    f'--process_id={i}', f'--heartbeat_timeout_s={heartbeat_s}']
                   if processes > 1 else [])
        log = open(os.path.join(logdir, f'p{i}.log'), 'w')
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'launch.py'), *args, *cluster], cwd=ROOT,
            env=process_env(devices), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        log.close()
    return procs


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait()


def wait(procs, timeout):
    """Every process's return code; all are killed (and TimeoutError raised) when one is
    still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        kill_all(procs)
        raise TimeoutError(f'cluster still running after {timeout} s: killed') from None
    return [p.returncode for p in procs]


def run(args, processes, devices, logdir, timeout=120, **kw):
    """Runs a cluster to the end -> (return codes, each process's output)."""
    os.makedirs(logdir, exist_ok=True)
    codes = wait(start(args, processes, devices, logdir, **kw), timeout)
    logs = []
    for i in range(processes):
        with open(os.path.join(logdir, f'p{i}.log')) as f:
            logs.append(f.read())
    return codes, logs


def run_python(code, processes, logdir, timeout=60):
    """Runs `python -c code COORDINATOR PROCESS_ID` as each process of a cluster of 1-device
    processes -> (return codes, outputs)."""
    os.makedirs(logdir, exist_ok=True)
    port = free_port()
    procs = []
    for i in range(processes):
        log = open(os.path.join(logdir, f'p{i}.log'), 'w')
        procs.append(subprocess.Popen(
            [sys.executable, '-c', code, f'127.0.0.1:{port}', str(i)], cwd=ROOT,
            env=process_env(1), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
    codes = wait(procs, timeout)
    logs = []
    for i in range(processes):
        with open(os.path.join(logdir, f'p{i}.log')) as f:
            logs.append(f.read())
    return codes, logs
