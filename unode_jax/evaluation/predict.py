"""Scoring new images with a trained model: its saved feature bank, threshold and predictions.csv.

Evaluation writes bank.npz beside the checkpoints: the training images' embeddings (the
bank of eq. 13) and logits, eq. (15)'s lambda, the checkpoint step they came from, and
the scores of the held-out normal training images (predict.holdout) with the threshold
fitted on them. `launch.py --mode=predict` then scores any folder of images without the
training data: score < threshold means novel. The threshold is the predict.quantile
quantile of the held-out scores, so that fraction of unseen normal images is expected to
be called novel (0.05: the 95% TPR of FPR@95).
"""
import csv
import json
import os

import numpy as np

from unode_jax.runtime import hosts
from unode_jax.runtime.errors import DamagedFileError
from unode_jax.runtime.files import read_npz, write_npz

BANK_FILE = 'bank.npz'


def fit_threshold(holdout_scores, quantile):
    """The quantile of held-out normal scores (NaN when nothing was held out)."""
    holdout_scores = np.asarray(holdout_scores, np.float64)
    if holdout_scores.size == 0:
        return float('nan')
    return float(np.quantile(holdout_scores, quantile))


BN_PREFIX = 'batch_stats/'
COPIES_PREFIX = 'copies/'  # score.copies: their z, logits, weight and label arrays.


def save_bank(directory, *, step, bank, weight, head, balance, holdout_scores, quantile,
              batch_stats=None, provenance=None):
    """bank.npz: what predict needs to score new images as evaluation scored the test set;
    batch_stats: the BatchNorm statistics scored with, when they are not the checkpoint's
    (score.bn_stats='inliers'), flattened under 'batch_stats/<layer>/<name>'; provenance:
    what it was computed from (a JSON-able dict: the model's training images, the
    evaluation fields), checked when it is read back (trained.load_trained)."""
    path = os.path.join(directory, BANK_FILE)
    bn = {}
    if batch_stats is not None:
        from flax import traverse_util
        bn = {BN_PREFIX + k: np.asarray(v) for k, v in
              traverse_util.flatten_dict(batch_stats, sep='/').items()}
    copies = {f'{COPIES_PREFIX}{k}': np.asarray(v) for k, v in (bank.get('copies') or {}).items()}
    write_npz(path, **bn, **copies, z=np.asarray(bank['z'], np.float32),
              knn_k=np.int64(bank.get('knn_k', 1)),
              logits=np.asarray(bank['logits'], np.float32), weight=np.float64(weight),
              step=np.int64(step), head=np.str_(head), balance=np.str_(balance),
              holdout_scores=np.asarray(holdout_scores, np.float64),
              quantile=np.float64(quantile),
              threshold=np.float64(fit_threshold(holdout_scores, quantile)),
              provenance=np.str_(json.dumps(provenance)))


def load_bank(directory):
    path = os.path.join(directory, BANK_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f'no {BANK_FILE} in {directory}: evaluate the run first '
                                '(--mode=eval or train_eval writes it)')
    b = read_npz(path, 'rerun --mode=eval to rewrite it')
    copies = {k[len(COPIES_PREFIX):]: v for k, v in b.items() if k.startswith(COPIES_PREFIX)}
    return dict(z=b['z'], logits=b['logits'], weight=float(b['weight']), step=int(b['step']),
                knn_k=int(b['knn_k']) if 'knn_k' in b else 1, copies=copies or None,
                head=str(b['head']), balance=str(b['balance']),
                holdout_scores=b['holdout_scores'], quantile=float(b['quantile']),
                threshold=float(b['threshold']), batch_stats=_batch_stats(b),
                provenance=_provenance(b, path))


def _provenance(b, path):
    """The bank's provenance dict; None for a bank written before it was recorded."""
    if 'provenance' not in b:
        return None
    try:
        value = json.loads(str(b['provenance']))
    except ValueError as e:
        raise DamagedFileError(f'{path} is damaged (provenance: {e}): rerun --mode=eval to '
                               'rewrite it') from None
    return value if isinstance(value, dict) else None


def _batch_stats(b):
    from flax import traverse_util
    flat = {k[len(BN_PREFIX):]: v for k, v in b.items() if k.startswith(BN_PREFIX)}
    return traverse_util.unflatten_dict(flat, sep='/') if flat else None


def with_batch_stats(state, bank):
    """The state scored with: the bank's BatchNorm statistics when it saved its own."""
    if bank.get('batch_stats') is None:
        return state
    import jax
    import jax.numpy as jnp
    stats = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), bank['batch_stats'],
                         state.batch_stats)
    return state.replace(batch_stats=stats)


def write_predictions(path, paths, scores, threshold, errors):
    """predictions.csv: one row per file, in `paths` order; a file that could not be read
    has an empty score and its error. scores: {path: dict(score, sim, binary)}."""
    counts = dict(novel=0, normal=0, error=0)
    writer = hosts.is_writer()  # The others count only.
    tmp = path + '.tmp' if writer else os.devnull
    try:  # File names that are not UTF-8 are written as their bytes.
        with open(tmp, 'w', newline='', encoding='utf-8', errors='surrogateescape') as f:
            w = csv.writer(f, lineterminator='\n')
            w.writerow(['path', 'score', 'is_novel', 'sim', 'binary', 'error'])
            for p in paths:
                if p in scores:
                    s = scores[p]
                    novel = bool(s['score'] < threshold)
                    counts['novel' if novel else 'normal'] += 1
                    w.writerow([p, f'{s["score"]:.6f}', int(novel), f'{s["sim"]:.6f}',
                                f'{s["binary"]:.6f}', ''])
                else:
                    counts['error'] += 1
                    w.writerow([p, '', '', '', '', errors.get(p, 'not scored')])
    except BaseException:
        if writer:
            os.remove(tmp)  # No half-written file beside the last complete one.
        raise
    if writer:
        os.replace(tmp, path)
    return counts
