"""One run per workdir: an exclusive lock on <workdir>/.unode.lock for the run's lifetime.

The lock is an flock(2) on the file, which the kernel drops when the process ends however
it ends (kill -9 included), so a killed run leaves no lock that blocks the next one: its
file, still naming the dead process, is taken over (and said so). The holder writes its
pid, host, mode and start time into the file, so a refused run can name who holds it.
The file is removed on release; a workdir the lock created is removed too if the run left
nothing else in it.
"""
import contextlib
import fcntl
import os
import socket
import time

from unode_jax.runtime.errors import WorkdirBusyError

LOCK_FILE = '.unode.lock'


def _read(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode('utf-8', 'replace').strip()


def _acquire(path, workdir):
    """An fd holding the lock on path, or WorkdirBusyError naming the holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd) or 'another process'
            os.close(fd)
            raise WorkdirBusyError(f'{workdir} is in use by {holder}: wait for that run to '
                                   'end (or stop it), or use another --workdir') from None
        try:  # The holder before us may have released and removed the file meanwhile.
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


@contextlib.contextmanager
def workdir_lock(workdir, mode):
    """Holds workdir's lock (creating workdir) for the with-block; WorkdirBusyError at once
    if another run holds it."""
    created = not os.path.isdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = _acquire(path, workdir)
    stale = _read(fd)
    if stale:
        print(f'{workdir}: taking over the lock of {stale}, which stopped without releasing '
              'it', flush=True)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (f'process {os.getpid()} on {socket.gethostname()} (--mode={mode}, '
                  f'since {time.strftime("%Y-%m-%d %H:%M:%S")})').encode())
    try:
        yield
    finally:
        os.unlink(path)  # Before unlocking: a waiting run then finds no stale file.
        os.close(fd)
        if created and not os.listdir(workdir):
            os.rmdir(workdir)
