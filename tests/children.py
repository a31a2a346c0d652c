"""Child processes of the tests (`python launch.py ...`, `python -c ...`).

A child's time limit only stops one that hangs: it is generous (a busy 2-core machine runs
a launch several times slower than a quiet one), and a child that outlives it is killed and
the test fails with the tail of what the child printed, not a bare TimeoutExpired.
"""
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch.py')
TIMEOUT_S = 900
TAIL = 3000


def tail(text, n=TAIL):
    """The last n characters of a child's output (str, bytes or None)."""
    if isinstance(text, bytes):
        text = text.decode(errors='replace')
    return (text or '')[-n:]


def timed_out(what, timeout, stdout, stderr=None):
    """Fails the test: `what` was killed after `timeout` s; shows what it printed."""
    shown = f'--- stdout (last {TAIL} characters) ---\n{tail(stdout)}'
    if stderr is not None:
        shown += f'\n--- stderr (last {TAIL} characters) ---\n{tail(stderr)}'
    pytest.fail(f'{what} still running after {timeout} s: killed\n{shown}', pytrace=False)


def run(cmd, timeout=TIMEOUT_S, **kw):
    """subprocess.run(cmd) with text output captured, from the repository root."""
    kw.setdefault('cwd', ROOT)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        timed_out(shlex.join(map(str, cmd)), timeout, e.stdout, e.stderr)


def launch(*args, timeout=TIMEOUT_S, **kw):
    """`python launch.py *args` run to the end -> CompletedProcess."""
    return run([sys.executable, LAUNCH, *map(str, args)], timeout=timeout, **kw)


def communicate(proc, timeout=TIMEOUT_S):
    """proc.communicate(): its (stdout, stderr); a child still running after `timeout` s is
    killed and the test fails with its output."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        timed_out(shlex.join(map(str, proc.args)), timeout, out, err)
