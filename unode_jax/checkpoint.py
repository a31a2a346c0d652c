"""Orbax checkpoints of the (unreplicated) train state under <workdir>/checkpoints.

Orbax writes each checkpoint to a temporary folder and renames it when complete,
so a run killed mid-save leaves the previous checkpoint as the latest one.
"""
import os

import jax
import orbax.checkpoint as ocp


def _tree(state):
    return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
            'opt_state': state.opt_state}


class Checkpointer:
    """Saves every `every` steps (and on request), keeps the last `keep`."""

    def __init__(self, workdir, keep):
        self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=('state', 'meta'))

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, state, meta):
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_tree(state)), meta=ocp.args.JsonSave(meta)))

    def restore(self, state):
        """The latest checkpoint restored into `state`'s structure, or None if there is none."""
        step = self.manager.latest_step()
        if step is None:
            return None
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _tree(state))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))['state']
        return state.replace(**restored)

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
