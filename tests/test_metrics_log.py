"""metrics.jsonl and TensorBoard event files: what is written, read back from the files;
no TensorFlow at run time; an end-to-end run's training curves and evaluation AUROCs."""
import json
import os
import struct
import sys

import numpy as np
import pytest

from tests import children
from tests.tiny_config import tiny_config
from unode_jax.run import run
from unode_jax.training.metrics_log import MetricsLog, log_evaluation


def read_scalars(folder):
    """{tag: [(step, value), ...]} of every event file under folder (TFRecord framing:
    length, its CRC, the serialized Event, its CRC)."""
    from tensorboardX.proto import event_pb2
    out = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if 'tfevents' not in name:
                continue
            data = open(os.path.join(root, name), 'rb').read()
            pos = 0
            while pos < len(data):
                (n,) = struct.unpack('<Q', data[pos:pos + 8])
                event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
                pos += 12 + n + 4
                for v in event.summary.value:
                    out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_rows_go_to_jsonl_and_tensorboard(tmp_path):
    rows = [dict(step=10, loss=2.5, lr=0.1), dict(step=20, loss=2.0, lr=0.2)]
    with MetricsLog(str(tmp_path), True) as log:
        log.write(rows)
    lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert lines == rows
    scalars = read_scalars(tmp_path / 'tensorboard')
    assert scalars['train/loss'] == [(10, 2.5), (20, 2.0)]
    assert scalars['train/lr'] == [(10, pytest.approx(0.1)), (20, pytest.approx(0.2))]
    log_evaluation(str(tmp_path), 20, dict(auroc=0.75, dataset='digits', flag=True), True)
    scalars = read_scalars(tmp_path / 'tensorboard')
    assert scalars['eval/auroc'] == [(20, 0.75)] and 'eval/dataset' not in scalars
    assert 'eval/flag' not in scalars
    # The operating point (metrics.operating_point): None without a fitted threshold.
    log_evaluation(str(tmp_path), 30, dict(threshold=None, tpr_at_threshold=None,
                                           f1_max=0.5, f1_max_threshold=1.25), True)
    scalars = read_scalars(tmp_path / 'tensorboard')
    assert scalars['eval/f1_max'] == [(30, 0.5)] and scalars['eval/f1_max_threshold'] == [
        (30, 1.25)] and 'eval/tpr_at_threshold' not in scalars and 'eval/threshold' not in scalars


def test_tensorboard_off_writes_only_jsonl(tmp_path):
    with MetricsLog(str(tmp_path), False) as log:
        log.write([dict(step=1, loss=1.0)])
    log_evaluation(str(tmp_path), 1, dict(auroc=0.5), False)
    assert os.listdir(tmp_path) == ['metrics.jsonl']


def test_no_tensorflow_at_run_time(tmp_path):
    code = ('import sys\n'
            'from unode_jax.training.metrics_log import MetricsLog\n'
            f'with MetricsLog({str(tmp_path)!r}, True) as log:\n'
            '    log.write([dict(step=1, loss=1.0)])\n'
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'tensorflow'))\n")
    r = children.run([sys.executable, '-c', code])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == '[]'


def test_a_run_shows_its_curves_and_aurocs(tmp_path):
    config = tiny_config(**{'data.normal_class': 0, 'negatives.weights': 'uniform',
                            'negatives.transforms': ('rotation', 'cutout'), 'log_every': 5,
                            'predict.holdout': 0.2})  # A fitted threshold: the operating point
    summary = run(config, str(tmp_path))
    scalars = read_scalars(tmp_path / 'tensorboard')
    steps = [s for s, _ in scalars['train/loss']]
    lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert steps == [r['step'] for r in lines] and len(steps) > 1
    (step, auroc), = scalars['eval/auroc']  # the run's own number, at its last step
    assert step == steps[-1] and auroc == pytest.approx(summary['classes']['0']['auroc'])
    assert {'eval/auroc_sim', 'eval/auroc_binary', 'eval/fpr95'} <= set(scalars)
    # The operating point at the threshold of bank.npz, saved with the scores, counted here.
    row, bank = summary['classes']['0'], np.load(tmp_path / 'bank.npz')
    saved = np.load(tmp_path / 'scores.npz')
    t = float(bank['threshold'])
    assert np.isfinite(t) and row['threshold'] == t == float(saved['threshold'])
    novel, flagged = ~saved['is_normal'], saved['score'] < t
    assert row['tpr_at_threshold'] == pytest.approx(flagged[novel].mean())
    assert row['fpr_at_threshold'] == pytest.approx(flagged[~novel].mean())
    assert row['precision_at_threshold'] == pytest.approx(novel[flagged].mean())
    for key in ('tpr_at_threshold', 'fpr_at_threshold', 'f1_at_threshold', 'f1_max'):
        assert scalars[f'eval/{key}'] == [(step, pytest.approx(row[key]))]
