"""Ctrl-C in the training loop, taken at a step boundary.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. In the
loop that is often inside orbax, whose CheckpointManager.wait_until_finished catches
BaseException around its wait for the previous checkpoint's finalisation: a Ctrl-C there
was logged and dropped with orbax's record of that checkpoint, so training went on to the
end (a CI run), or stopped later saying it would resume from the start (a test of it).
Within `deferred_sigint()` the first Ctrl-C only sets `requested`, which the loop checks
(`check()`) between steps; a second one stops at once (the default), for a step that hangs.
"""
import contextlib
import signal
import threading


class DeferredInterrupt:
    requested = False

    def check(self):
        """KeyboardInterrupt if a Ctrl-C came since the last check."""
        if self.requested:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_sigint():
    """A DeferredInterrupt whose `requested` turns True on the first SIGINT. Outside the
    main thread (where no handler can be set) it never does, and SIGINT is untouched."""
    state = DeferredInterrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if state.requested:  # The second Ctrl-C: now.
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        state.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
