"""Training curves and evaluation numbers, where a user looks for them: metrics.jsonl (the
record a resumed run reads back, checkpoint.resume) and, with config.tensorboard,
TensorBoard event files in <model folder>/tensorboard/ (`tensorboard --logdir=WORKDIR`
shows every class of a sweep as its own run). Process 0 of a multi-host run alone writes.

The event files come from tensorboardX: the lightest well-kept writer that needs no
TensorFlow (flax.metrics.tensorboard and clu's writers import TensorFlow; torch's
needs torch); tensorboardX needs numpy, protobuf and packaging, already here.
"""
import json
import numbers
import os

from unode_jax.runtime import hosts

TENSORBOARD_DIR = 'tensorboard'
METRICS_FILE = 'metrics.jsonl'


def _event_writer(directory, purge_step=None):
    from tensorboardX import SummaryWriter  # Imported only where curves are written.
    return SummaryWriter(os.path.join(directory, TENSORBOARD_DIR), flush_secs=30,
                         purge_step=purge_step)


class MetricsLog:
    """`with MetricsLog(workdir, config.tensorboard) as log: log.write(rows)`: each row a
    dict with 'step', appended to metrics.jsonl and, as train/<name>, to TensorBoard. A
    run resumed at step `start` hides the curves' points from start on that the stopped run
    wrote after its checkpoint (TensorBoard's purge_step), as resume cuts metrics.jsonl."""

    def __init__(self, directory, tensorboard, start=0):
        self.writer = hosts.is_writer()
        self.path = os.path.join(directory, METRICS_FILE)
        self.jsonl = open(self.path if self.writer else os.devnull, 'a')
        self.events = (_event_writer(directory, start or None) if tensorboard and self.writer
                       else None)

    def write(self, rows, prefix='train'):
        for row in rows:
            self.jsonl.write(json.dumps(row) + '\n')
            if self.events is not None:
                for name, value in row.items():
                    if name != 'step':
                        self.events.add_scalar(f'{prefix}/{name}', value, row['step'])
        self.jsonl.flush()

    def close(self):
        self.jsonl.close()
        if self.events is not None:
            self.events.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log_evaluation(directory, step, result, tensorboard, prefix='eval'):
    """A model's evaluation numbers (AUROCs, AUPRs, FPR@95, lambda, the operating point:
    threshold, tpr_at_threshold, ..., f1_max) at its training step as <prefix>/<name> in
    its TensorBoard folder; strings, lists and None (no fitted threshold) are left out."""
    if not (tensorboard and hosts.is_writer()):
        return
    events = _event_writer(directory)
    for name, value in result.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            events.add_scalar(f'{prefix}/{name}', float(value), step)
    events.close()
