"""Orbax checkpoints of the (unreplicated) train state under <workdir>/checkpoints.

Saved and restored as host numpy arrays, the same on every process: in a multi-host run
every process takes part in each save and restore (orbax's barriers) and process 0
writes the files; the state then goes back to the devices.

Orbax writes each checkpoint to a temporary folder and renames it when complete,
so a run killed mid-save leaves the previous checkpoint as the latest one. A complete
checkpoint damaged later (is_damaged: a truncated, garbled or deleted file) is moved to
<workdir>/checkpoints_unreadable/ and the one before it restored, with one line saying so;
any other error of a restore (out of memory, a read that failed, a permission) is raised
as it is, with nothing moved: the file may be fine. A checkpoint of another model (other
shapes) stops the run with nothing moved. A disk that fills up during a save stops the run
with DiskFullError: which step was being written, and the step a rerun resumes from (the
last complete checkpoint).

Each checkpoint's metadata holds the record of what its model was trained on
(runtime/fingerprint.py): resume() checks it against this run's before training further.
"""
import json
import os
import re
import shutil
import sys

import jax
import orbax.checkpoint as ocp

from unode_jax.runtime import fingerprint, hosts
from unode_jax.runtime.errors import CheckpointMismatchError, DiskFullError, is_disk_full

# What orbax and tensorstore raise for a damaged checkpoint, each forced by
# tests/test_reliability.py: tensorstore's status for a truncated array file (OUT_OF_RANGE),
# a garbled one or a garbled OCDBT manifest (DATA_LOSS), a deleted one (NOT_FOUND), a
# deleted OCDBT sub-database (FAILED_PRECONDITION); orbax's 'pytree structure error' for a
# deleted _METADATA; json's and utf-8's errors for a garbled JSON file; FileNotFoundError
# for a deleted JSON item file; KeyError 'Item ... was not found in the checkpoint' for a
# deleted item folder.
_DAMAGED_STATUS = ('OUT_OF_RANGE:', 'DATA_LOSS:', 'NOT_FOUND:', 'FAILED_PRECONDITION:',
                   'pytree structure error')


def is_damaged(error):
    """Whether a restore's error says that the checkpoint's files are damaged (and only
    then: an out-of-memory, a failed read or a permission is not)."""
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError)):
        return True
    if isinstance(error, KeyError):
        return 'was not found in the checkpoint' in str(error)
    return type(error) is ValueError and str(error).startswith(_DAMAGED_STATUS)


def _tree(state):
    return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
            'opt_state': state.opt_state}


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def _quiet_closed_loop_errors():
    """After a failed restore or save, tensorstore still completes its other reads or writes
    and calls back into the event loop orbax has closed: dozens of 'Event loop is closed'
    tracebacks as unraisable errors, later and from other threads (a full disk: 126 of
    them). Those, and only those, are dropped."""
    previous = sys.unraisablehook
    if getattr(previous, 'drops_closed_loop', False):
        return

    def hook(unraisable):
        if not (unraisable.exc_type is RuntimeError
                and str(unraisable.exc_value) == 'Event loop is closed'):
            previous(unraisable)

    hook.drops_closed_loop = True
    sys.unraisablehook = hook


def _check_like(restored, target):
    """ValueError naming the first array whose saved shape or dtype is not the model's."""
    saved = dict(jax.tree_util.tree_flatten_with_path(restored)[0])
    for path, want in jax.tree_util.tree_flatten_with_path(target)[0]:
        got = saved.get(path)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            found = 'missing' if got is None else f'{got.shape} {got.dtype}'
            raise ValueError(f'{jax.tree_util.keystr(path)}: saved {found}, this model '
                             f'{want.shape} {want.dtype}')


class Checkpointer:
    """Saves every `every` steps (and on request), keeps the last `keep`."""

    def __init__(self, workdir, keep, create=True):
        _quiet_closed_loop_errors()  # Before any write: they come from other threads.
        self.workdir = workdir
        self._writing = None  # The step of the last save handed to orbax.
        self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
            item_names=('state', 'meta'))

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, state, meta):
        """state: the train state as numpy arrays (jax.device_get), on every process. The
        write goes on in the background; its failure is raised by the next save or close."""
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_tree(state)), meta=ocp.args.JsonSave(meta)))
        except Exception as e:
            self._raise_disk_full(e, self._writing or step)  # Most likely the one before.
            raise
        self._writing = step

    def _raise_disk_full(self, error, step):
        """DiskFullError from a save's error, if the disk is full: the step whose write
        failed (named in tensorstore's path, else `step`) and the one a rerun resumes from."""
        if not is_disk_full(error):
            return
        found = re.search(r'/checkpoints/(\d+)\.', str(error))
        failed = found.group(1) if found else step
        complete = [int(n) for n in os.listdir(self.directory) if n.isdigit()]
        kept = f'step {max(complete)}' if complete else 'the start'
        raise DiskFullError(
            f'no space left on device writing checkpoint {failed} in {self.directory}: free '
            f'some space and rerun the same command (it resumes from {kept})') from error

    def restore(self, state):
        """(state, meta) of the newest checkpoint, restored into `state`'s structure, or None
        if there is none. Newer ones that are damaged (is_damaged) are set aside; any other
        error is raised with nothing moved; a checkpoint of other shapes stops the run
        (CheckpointMismatchError: another config's model, most likely)."""
        target = jax.device_get(_tree(state))  # Restored as numpy, on every process.
        failed = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 -- only a damaged file is tried past
                _quiet_closed_loop_errors()
                if not is_damaged(e):
                    raise
                failed.append((step, e))
                continue
            try:  # A numpy restore takes the saved shapes.
                _check_like(restored['state'], target)
            except ValueError as e:
                raise CheckpointMismatchError(
                    f'no checkpoint in {self.directory} restores into this config\'s model '
                    f'(step {step}: {_first_line(e)}): it was trained with another config '
                    '(rerun without --config to use its config.json)') from None
            if failed:
                hosts.sync('checkpoint_restored')  # Every process has read before a move.
                for bad_step, error in failed:
                    self._set_aside(bad_step, error)
                hosts.sync('checkpoint_set_aside')
                self.manager.reload()
            return state.replace(**jax.device_put(restored['state'])), dict(restored['meta'])
        if failed:
            step, error = failed[0]
            raise CheckpointMismatchError(
                f'no checkpoint in {self.directory} restores (step {step}: '
                f'{_first_line(error)}): its checkpoints are damaged (train in a new workdir, '
                'or delete the folder to train again)')
        return None

    def latest_record(self):
        """The training record (runtime/fingerprint.py) in the newest checkpoint's metadata:
        None where there is no checkpoint, {} where it has none or is damaged (restore
        decides), else the record."""
        steps = self.manager.all_steps()
        if not steps:
            return None
        try:
            meta = self.manager.restore(max(steps), args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))['meta']
        except Exception as e:  # noqa: BLE001 -- only a damaged file is left to restore
            _quiet_closed_loop_errors()
            if not is_damaged(e):
                raise
            return {}
        return dict(meta).get('record') or {}

    def _set_aside(self, step, error):
        """Moves an unreadable checkpoint out of orbax's sight, so that a resumed run can
        write that step again."""
        if not hosts.is_writer():
            return
        aside = os.path.join(os.path.abspath(self.workdir), 'checkpoints_unreadable')
        os.makedirs(aside, exist_ok=True)
        dest = os.path.join(aside, str(step))
        n = 1
        while os.path.exists(dest):
            dest, n = os.path.join(aside, f'{step}.{n}'), n + 1
        shutil.move(os.path.join(self.directory, str(step)), dest)
        print(f'checkpoint {step} in {self.directory} is unreadable ({_first_line(error)}); '
              f'moved to {dest}, falling back to the one before it', flush=True)

    def wait(self):
        """Until the background write of the last save is done (its error raised here)."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._raise_disk_full(e, self._writing)
            raise

    def close(self):
        self.wait()
        self.manager.close()


def _metrics_step(line):
    """The step of one metrics.jsonl line; None for a line a kill cut short."""
    try:
        return int(json.loads(line)['step'])
    except (ValueError, KeyError, TypeError):
        return None


def truncate_metrics(path, last_step):
    """Drop metrics.jsonl lines past the restored checkpoint (written before a kill), and a
    last line the kill cut in half."""
    if not os.path.exists(path) or not hosts.is_writer():
        return
    with open(path) as f:
        kept = [(l, _metrics_step(l)) for l in f]
    lines = [l for l, step in kept if step is not None and step <= last_step]
    with open(path, 'w') as f:
        f.writelines(lines)


def resume(ckpt, state, metrics_path, record=None):
    """The newest readable checkpoint (metrics.jsonl cut back to it), or state as it is
    (and no metrics.jsonl) when there is none. record (fingerprint.training_record): the
    checkpoint must have been trained with these fields on these images (ConfigError)."""
    restored = ckpt.restore(state)
    if restored is not None:
        state, meta = restored
        if record is not None:
            fingerprint.check_record(meta.get('record'), record, ckpt.workdir)
        truncate_metrics(metrics_path, int(state.step))
        return state
    if os.path.exists(metrics_path) and hosts.is_writer():
        os.remove(metrics_path)
    return state
