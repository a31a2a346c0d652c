"""The errors a user's input can cause; launch.py shows each as one line on stderr.

Everything else a run can raise is a bug (or the machine's fault): launch.py shows it as
one line too, with `--debug` (or UNODE_DEBUG=1) for the traceback.
"""
import errno


class UserError(Exception):
    """A bad input, named in the message: a field, a file, a busy workdir."""


class ConfigError(UserError, ValueError):
    """A config field has a value the run cannot use."""


class WorkdirBusyError(UserError):
    """Another process holds the workdir's lock."""


class Interrupted(UserError):
    """The run was stopped (Ctrl-C); the message says where and how to resume."""


class UnsafeCheckpointError(UserError, ValueError):
    """A pickle in a .pt/.pth file asked for a global outside the whitelist (unpickler.py)."""


class CheckpointFormatError(UserError, ValueError):
    """Not a torch checkpoint, corrupt, or a tensor kind this reader does not support."""


class CheckpointMismatchError(UserError):
    """No checkpoint of a workdir restores into the config's model."""


class PeerError(UserError):
    """Process 0 of a multi-host run stopped at a step the others wait on (its own error is
    in its output)."""


class DamagedFileError(UserError, ValueError):
    """A file a run wrote earlier cannot be read back (truncated, overwritten, deleted part)."""


class DiskFullError(UserError, OSError):
    """A write ran out of space; the message names what was being written, where, and that
    rerunning the same command resumes."""


# How a full disk reads: Python's OSError, or tensorstore's (orbax's checkpoint writes)
# "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']" ValueError.
_DISK_FULL_TEXT = ('No space left on device', f"os_error_code='{errno.ENOSPC}'")


def is_disk_full(e):
    """Whether e, or an error it was raised from, is a full disk (ENOSPC)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(e) for t in _DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(e, workdir):
    """The DiskFullError for a full disk met outside a checkpoint (metrics, results, the
    data cache): what was written, and that a rerun resumes from the last checkpoint."""
    if isinstance(e, DiskFullError):
        return e
    what = (f'writing {e.filename}' if isinstance(e, OSError) and e.filename
            else f'writing in {workdir}')
    return DiskFullError(f'no space left on device {what}: free some space and rerun the same '
                         f'command (it resumes from the last checkpoint in {workdir})')


# What launch.py reports as the user's error rather than as a bug: the package raises
# ValueError (a bad field or file content) and OSError (a missing or unreadable file, a full
# disk) with messages written for the user; FloatingPointError is training's non-finite stop.
USER_ERRORS = (UserError, ValueError, OSError, FloatingPointError)


def error_line(e, workdir=None):
    """What launch.py prints for e: one line, the message of an error the user's input
    caused, else the error's type and first line and a pointer to --debug. A full disk
    says what it was writing and that rerunning resumes (in `workdir`)."""
    if is_disk_full(e):
        e = disk_full_error(e, workdir)
    first = (str(e).strip().splitlines() or [''])[0]
    if isinstance(e, USER_ERRORS):
        return f'error: {first or type(e).__name__}'
    return (f'error: {type(e).__name__}: {first} (an internal error: rerun with --debug for '
            'the traceback)')
