"""The operating point in the reports (report.py): the console block, the Markdown table,
the CSV cells and the mean over rows of metrics.operating_point's fields, and the threshold
a rebuild recomputes them with. NOVEL images are the positive class here (metrics.py); a
field without a fitted threshold (predict.holdout=0) is None in results.json, '-' in the
tables and an empty CSV cell."""
import os
import textwrap

import numpy as np

from unode_jax.evaluation import metrics
from unode_jax.evaluation.predict import BANK_FILE
from unode_jax.runtime.errors import DamagedFileError
from unode_jax.runtime.files import read_npz

SHORT = {'threshold': 't', 'tpr_at_threshold': 'TPR@t', 'fpr_at_threshold': 'FPR@t',
         'precision_at_threshold': 'prec@t', 'f1_at_threshold': 'F1@t', 'f1_max': 'F1max',
         'f1_max_threshold': 't(F1max)'}
NOTE = ("NOVEL = positive: an image is flagged novel when its score < t, the fitted threshold "
        "(predict.quantile of held-out normal scores; '-': none, predict.holdout=0); TPR@t / "
        "FPR@t: novel / normal test images flagged; F1-max: the best F1 over all thresholds, "
        "and the threshold reaching it")

# The corrupted test sets' table (Table 2): the flag at each class's threshold, fitted on
# its clean held-out images, so FPR@t is the share of corrupted normal images flagged.
CORRUPTED_NOTE = ("; TPR@t to F1-max: the operating point, NOVEL = positive, flagged when "
                  "score < t, each class's threshold fitted on its clean held-out normal "
                  "images ('-' without one)")


def fields(rows):
    """The operating point's fields in the reports' order (t, the rates, F1-max's t) when
    every row has them; () for rows written before the operating point existed."""
    if rows and all(k in r for r in rows for k in metrics.OPERATING + metrics.THRESHOLDS):
        return ('threshold',) + metrics.OPERATING + ('f1_max_threshold',)
    return ()


def mean_std(values):
    """dict(mean, std) (population std) of fractions; both None where one is None."""
    if any(v is None for v in values):
        return dict(mean=None, std=None)
    return dict(mean=float(np.mean(values)), std=float(np.std(values)))


def means(rows):
    """{rate: mean over rows} of the operating point's rates (None where a row has None;
    {} where a row lacks them): Table 2's cells of the corrupted test sets."""
    if not all(k in r for r in rows for k in metrics.OPERATING):
        return {}
    return {k: mean_std([r[k] for r in rows])['mean'] for k in metrics.OPERATING}


def stats(rows):
    """{rate: dict(mean, std)} of the operating point's rates over the rows (not of the
    thresholds: each model's scores have their own scale)."""
    return {k: mean_std([r[k] for r in rows])
            for k in fields(rows) if k in metrics.OPERATING}


def cell(value, key, rate='.2f', point='.4f'):
    """A rate (any metric but a threshold) in %, a threshold as a score, None as '-'."""
    if value is None:
        return '-'
    return f'{value:{point}}' if key in metrics.THRESHOLDS else f'{100 * value:{rate}}'


def console(rows, labels, first, summary):
    """The block format_table prints under the AUROC table after a blank line ('' without
    the fields): a row per label (key, name), the mean and std of the rates, the NOTE."""
    keys = fields(rows)
    if not keys:
        return ''
    lines = [f'{first[0]:>6} {first[1]:>12}' + ''.join(f' {SHORT[k]:>9}' for k in keys)]
    for (key, name), r in zip(labels, rows):
        lines.append(f'{key:>6} {str(name)[:12]:>12}' +
                     ''.join(f' {cell(r[k], k):>9}' for k in keys))
    for stat in ('mean', 'std'):
        lines.append(f'{stat:>6} {summary["dataset"][:12]:>12}' + ''.join(
            f' {cell(summary["metrics"][k][stat], k) if k in metrics.OPERATING else "":>9}'
            for k in keys))
    return '\n\n' + '\n'.join([line.rstrip() for line in lines] +
                     textwrap.wrap(f'(operating point, {NOTE})', 100))


def markdown(rows, labels, first, summary):
    """The Markdown table of the operating point ([] without the fields): a row per label
    (first: the first column's header), then the rates' mean ± std."""
    keys = fields(rows)
    if not keys:
        return []
    cols = [first] + [metrics.NAMES[k] for k in keys]
    lines = ['', f'Operating point (%, {NOTE})', '', '| ' + ' | '.join(cols) + ' |',
             '|' + '---|' * len(cols)]
    for label, r in zip(labels, rows):
        lines.append(f'| {label} | ' + ' | '.join(
            cell(r[k], k, '.1f') for k in keys) + ' |')
    m = summary['metrics']
    lines.append('| **mean ± std** | ' + ' | '.join(
        ('-' if m[k]['mean'] is None else
         f'**{cell(m[k]["mean"], k, ".1f")}** ± {cell(m[k]["std"], k, ".1f")}')
        if k in metrics.OPERATING else '' for k in keys) + ' |')
    return lines


def csv_cells(r, keys, stat=None):
    """A row's CSV cells of keys (fields): fractions and thresholds to 6 decimals, None
    empty; with stat ('mean', 'std'), r is a summary's metrics and the thresholds blank."""
    if stat is not None:
        r = {k: r[k][stat] for k in keys if k in metrics.OPERATING}
    return [f'{r[k]:.6f}' if r.get(k) is not None else '' for k in keys]


def with_threshold(scores, bank_dir, step):
    """Saved scores (scores.npz) with the threshold they were computed with, for a rebuild
    (report.class_metrics reads it): scores.npz's own 'threshold' (saved with them since
    the operating point exists); for an older scores.npz, bank_dir's bank.npz's when it is
    of the same training step (evaluation writes both), else NaN (no operating point at a
    threshold): never a results row's value, which may be stale."""
    return dict(scores, threshold=_saved_threshold(scores, bank_dir, step))


def _saved_threshold(scores, bank_dir, step):
    if 'threshold' in scores:
        return float(scores['threshold'])
    path = os.path.join(bank_dir, BANK_FILE)
    try:
        bank = read_npz(path, 'rerun --mode=eval to rewrite it')
    except (FileNotFoundError, DamagedFileError):
        return float('nan')
    if 'threshold' not in bank or 'step' not in bank or int(bank['step']) != step:
        return float('nan')
    return float(bank['threshold'])
