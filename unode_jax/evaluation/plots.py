"""The report's figures, drawn with matplotlib's object API (a Figure on its own Agg
canvas): the user's pyplot backend and figures are never touched.

Per class (or outlier set), from its scores.npz (report.write_report):
  roc.png          ROC of the score (15), its terms (13), (14) and each saved baseline
  pr.png           precision-recall, normal = positive (AUPR-In) and novel = positive (AUPR-Out)
  hist.png         normal and novel test scores, with predict's fitted threshold (the one
                   saved with them in scores.npz)
                   where one was fitted (predict.holdout > 0)
  grid_extremes.png, grid_worst.png  the test images grids.py picks
Per trained model: curves.png, its training curves from metrics.jsonl.
Per --mode=predict: predictions_hist.png and predictions_lowest.png beside predictions.csv.
"""
import json
import math
import os
import textwrap

import numpy as np

from unode_jax.evaluation import grids, metrics
from unode_jax.evaluation.baselines import BASELINES
from unode_jax.runtime import hosts

TERMS = (('score', 'score (15)'), ('sim', 'sim (13)'), ('binary', 'binary (14)'))
NORMAL, NOVEL = 'tab:green', 'tab:red'
PREDICT_FILES = ('predictions_hist.png', 'predictions_lowest.png')
CURVE_PANELS = (('loss', 'loss'), ('acc', 'accuracy'), ('lr', 'learning rate'))


def _figure(width, height):
    """A Figure on its own Agg canvas: no pyplot, no backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def text(s):
    """s as matplotlib text: a '$' from a file or folder name is no mathtext, and a file
    name's bytes that are not UTF-8 (os's surrogate escapes) show as U+FFFD."""
    s = str(s).encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
    return s.replace('$', r'\$')


def wrap(s, inches, size=12):
    """text(s) broken into lines that fit `inches` of figure width at font `size`."""
    return textwrap.fill(text(s), max(20, int(inches * 100 / (0.55 * size))))


def _curves(scores):
    """(key, label, baseline?) of every curve scores has: the score's terms, the baselines."""
    out = [(k, label, False) for k, label in TERMS if k in scores]
    return out + [(key, f'{label} (baseline)', True) for key, _, label in BASELINES.values()
                  if key in scores]


def saved_threshold(scores):
    """The fitted threshold saved with these scores (scores.npz: the one the operating point
    uses), or None (predict.holdout = 0, or scores saved before it was)."""
    t = float(scores.get('threshold', np.nan))
    return t if np.isfinite(t) else None


def plot_class(directory, scores, title):
    """roc.png, pr.png and hist.png of one class's scores; the histogram shows the
    threshold saved with them (saved_threshold), where there is one."""
    from sklearn.metrics import precision_recall_curve, roc_curve
    is_normal = np.asarray(scores['is_normal'], bool)
    fig = _figure(4.6, 4.6)
    ax = fig.subplots()
    for key, label, base in _curves(scores):
        fpr, tpr, _ = roc_curve(is_normal, scores[key])
        ax.plot(fpr, tpr, '--' if base else '-', lw=1.2 if base else 1.6,
                label=f'{label}: AUROC {100 * metrics.auroc(is_normal, scores[key]):.1f}')
    ax.plot([0, 1], [0, 1], ':', color='0.6')
    ax.set(xlabel='false positive rate (novel accepted)',
           ylabel='true positive rate (normal accepted)', title=wrap(title, 4.2))
    ax.legend(fontsize=7, loc='lower right')
    _save(fig, os.path.join(directory, 'roc.png'))
    fig = _figure(9, 4.2)
    axes = fig.subplots(1, 2)
    for ax, positive, sign, name, ap in ((axes[0], is_normal, 1, 'normal', metrics.aupr_in),
                                         (axes[1], ~is_normal, -1, 'novel', metrics.aupr_out)):
        for key, label, base in _curves(scores):
            p, r, _ = precision_recall_curve(positive, sign * np.asarray(scores[key]))
            ax.plot(r, p, '--' if base else '-', lw=1.2 if base else 1.6,
                    label=f'{label}: AP {100 * ap(is_normal, scores[key]):.1f}')
        ax.axhline(positive.mean(), ls=':', color='0.6', label='chance')
        ax.set(xlabel=f'recall ({name} images found)', ylabel='precision', ylim=(0, 1.02),
               title=f'{name} = positive (AUPR-{"In" if sign > 0 else "Out"})')
        ax.legend(fontsize=7, loc='lower left')
    fig.suptitle(wrap(title, 9, 10), fontsize=10)
    _save(fig, os.path.join(directory, 'pr.png'))
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    bins = np.histogram_bin_edges(scores['score'], 40)
    ax.hist(scores['score'][is_normal], bins, alpha=0.6, density=True, label='normal',
            color=NORMAL)
    ax.hist(scores['score'][~is_normal], bins, alpha=0.6, density=True, label='novel',
            color=NOVEL)
    threshold = saved_threshold(scores)
    if threshold is not None:
        ax.axvline(threshold, color='k', ls='--', lw=1.2,
                   label=text(f'threshold {threshold:.3f} (below: novel)'))
    ax.set(xlabel='score (higher = more normal)', ylabel='density', title=wrap(title, 6))
    ax.legend(fontsize=8)
    _save(fig, os.path.join(directory, 'hist.png'))


def plot_sections(parts, load_scores):
    """The figures of report.html's parts (report.sections): each class's (or outlier
    set's) plots and grids from load_scores(its folder), and each model's curves once."""
    models = set()
    for s in parts:
        scores = load_scores(s['directory'])
        plot_class(s['directory'], scores, s['title'])
        plot_grids(s['directory'], scores, s['title'])
        if s['model_dir'] not in models:
            models.add(s['model_dir'])
            plot_curves(s['model_dir'], s['model_title'])


def plot_grid(path, rows, title):
    """rows: [(row label, [(uint8 image, caption, colour), ...])], one image a cell."""
    n = max([len(cells) for _, cells in rows] + [1])
    fig = _figure(1.15 * n + 0.6, 1.45 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, cells) in enumerate(rows):
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(cells):
                ax.set_frame_on(False)
                continue
            image, caption, colour = cells[j]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray',
                      vmin=0, vmax=255, interpolation='nearest')
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=3)
            ax.set_title(text(caption), fontsize=7, color=colour)
        axes[r][0].set_ylabel(text(label), fontsize=8)
    fig.suptitle(wrap(title, 1.15 * n + 0.6, 9), fontsize=9)
    _save(fig, path)


def _cells(scores, indices, images):
    is_normal = np.asarray(scores['is_normal'], bool)
    return [(x, f'#{i} {scores["score"][i]:.4f}', NORMAL if is_normal[i] else NOVEL)
            for i, x in zip(indices, images)]


GRID_FILES = {'grid_extremes.png': (('most_normal', 'most normal'),
                                    ('least_normal', 'least normal')),
              'grid_worst.png': (('worst_novel', 'novel,\nscored most normal'),
                                 ('worst_normal', 'normal,\nscored least normal'))}


def plot_grids(directory, scores, title):
    """grid_extremes.png and grid_worst.png from directory's test_images.npz when it holds
    these scores' images (grids.grid_images); returns whether they were drawn (stale grids
    of other scores are removed)."""
    picked = grids.grid_images(directory, scores)
    for name, rows in GRID_FILES.items():
        path = os.path.join(directory, name)
        if picked is None:
            if os.path.exists(path):
                os.remove(path)
            continue
        plot_grid(path, [(label, _cells(scores, *picked[key])) for key, label in rows],
                  f'{title}: test images by score (green: normal, red: novel; #index score)')
    return picked is not None


def read_metrics(model_dir):
    """metrics.jsonl's rows (dicts with a step); a line that does not parse is skipped."""
    rows = []
    try:
        with open(os.path.join(model_dir, 'metrics.jsonl'), encoding='utf-8') as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get('step'), (int, float)):
                    rows.append(row)
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    return rows


def plot_curves(model_dir, title):
    """curves.png: the losses, the binary head's accuracy and the learning rate against
    the step, from metrics.jsonl; returns whether it was drawn (no rows: no plot)."""
    rows = read_metrics(model_dir)
    panels = []
    for prefix, name in CURVE_PANELS:
        keys = sorted({k for r in rows for k, v in r.items() if k.startswith(prefix) and
                       isinstance(v, (int, float)) and not isinstance(v, bool)})
        if keys:
            panels.append((name, keys))
    if not panels:
        return False
    fig = _figure(4 * len(panels), 3.4)
    for ax, (name, keys) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for k in keys:
            points = [(r['step'], r[k]) for r in rows if isinstance(r.get(k), (int, float))
                      and math.isfinite(r[k])]
            if points:
                ax.plot(*zip(*points), lw=1.2, label=text(k))
        ax.set(xlabel='step', title=name)
        ax.legend(fontsize=7)
    fig.suptitle(wrap(title, 4 * len(panels), 10), fontsize=10)
    _save(fig, os.path.join(model_dir, 'curves.png'))
    return True


def plot_predictions(directory, names, score, images, threshold, reference=()):
    """predictions_hist.png (the new images' scores, the held-out normal scores `reference`
    where there are some, the threshold) and predictions_lowest.png (the 2 GRID
    lowest-scoring new images, lowest first) in directory, by process 0; names: each
    image's file. Returns their paths (none, and an earlier pair removed, without images)."""
    paths = [os.path.join(directory, f) for f in PREDICT_FILES]
    if not hosts.is_writer():
        return []
    score = np.asarray(score, np.float64)
    if not len(score):
        for p in paths:
            if os.path.exists(p):
                os.remove(p)
        return []
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    reference = np.asarray(reference, np.float64).ravel()
    bins = np.histogram_bin_edges(np.concatenate([score, reference, [threshold]]), 40)
    ax.hist(score, bins, alpha=0.7, label=f'new images ({len(score)})')
    if reference.size:
        ax.hist(reference, bins, alpha=0.5, color='0.5',
                label=f'held-out normal training images ({reference.size})')
    ax.axvline(threshold, color='k', ls='--', lw=1.2,
               label=f'threshold {threshold:.3f}: {int((score < threshold).sum())} below (novel)')
    ax.set(xlabel='score (higher = more normal)', ylabel='images', title='--mode=predict')
    ax.legend(fontsize=8)
    _save(fig, paths[0])
    order = np.lexsort((np.arange(len(score)), score))[:2 * grids.GRID]
    cells = [(images[i], f'{text(os.path.basename(str(names[i])))[:16]}\n{score[i]:.3f}',
              NOVEL if score[i] < threshold else NORMAL) for i in order]
    plot_grid(paths[1], [('lowest' if r == 0 else '', cells[r * grids.GRID:(r + 1) * grids.GRID])
                         for r in range(math.ceil(len(cells) / grids.GRID))],
              'the lowest-scoring new images, lowest first (red: below the threshold, novel)')
    return paths
