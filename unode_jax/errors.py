"""The errors a user's input can cause; launch.py shows each as one line on stderr.

Everything else a run can raise is a bug (or the machine's fault): launch.py shows it as
one line too, with `--debug` (or UNODE_DEBUG=1) for the traceback.
"""


class UserError(Exception):
    """A bad input, named in the message: a field, a file, a busy workdir."""


class ConfigError(UserError, ValueError):
    """A config field has a value the run cannot use."""


class WorkdirBusyError(UserError):
    """Another process holds the workdir's lock."""


class Interrupted(UserError):
    """The run was stopped (Ctrl-C); the message says where and how to resume."""


class UnsafeCheckpointError(UserError, ValueError):
    """A pickle in a weights file asked for a global outside the whitelist (torch_pickle)."""


class CheckpointFormatError(UserError, ValueError):
    """Not a torch checkpoint, corrupt, or a tensor kind this reader does not support."""


class CheckpointMismatchError(UserError):
    """No checkpoint of a workdir restores into the config's model."""


class PeerError(UserError):
    """Process 0 of a multi-host run stopped at a step the others wait on (its own error is
    in its output)."""


class DamagedFileError(UserError, ValueError):
    """A file a run wrote earlier cannot be read back (truncated, overwritten, deleted part)."""


# What launch.py reports as the user's error rather than as a bug: the package raises
# ValueError (a bad field or file content) and OSError (a missing or unreadable file, a full
# disk) with messages written for the user; FloatingPointError is training's non-finite stop.
USER_ERRORS = (UserError, ValueError, OSError, FloatingPointError)


def error_line(e):
    """What launch.py prints for e: one line, the message of an error the user's input
    caused, else the error's type and first line and a pointer to --debug."""
    first = (str(e).strip().splitlines() or [''])[0]
    if isinstance(e, USER_ERRORS):
        return f'error: {first or type(e).__name__}'
    return (f'error: {type(e).__name__}: {first} (an internal error: rerun with --debug for '
            'the traceback)')
