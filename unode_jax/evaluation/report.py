"""Reports of runs: the console table, results.json/.csv/.md, and, drawn by plots.py and
put on one page by page.py, each class's plots and the run's report.html.

A one-class run has a row per normal class (summary['classes'], class_<c>/ in a sweep);
a multi-class run a row per outlier test set (summary['outlier_sets'], ood_<name>/).

Every number is computed from the per-image scores saved in scores.npz, so
`launch.py --mode=report --workdir=DIR` rebuilds every report of a finished run
without a model, a dataset or a device. Normal images are the positive class in
every metric (OpenOOD v1.5 names the AUPRs the other way: its AUPR-In is our AUPR-Out).
"""
import csv
import io
import os
import re

import numpy as np

from unode_jax.evaluation import metrics, operating, page, plots as plots_lib
from unode_jax.evaluation.baselines import BASELINES, baseline_columns
from unode_jax.runtime import hosts, files
from unode_jax.runtime.errors import DamagedFileError
from unode_jax.runtime.files import read_json, read_npz, write_json

POSITIVE = 'normal (inlier) images are the positive class; higher score = more normal'
# Per class: the metrics of the score (eq. 15), and the AUROC of each of its terms.
COLUMNS = metrics.METRICS + ('auroc_sim', 'auroc_binary')
HEADERS = {**metrics.NAMES, 'auroc_sim': 'AUROC sim (13)', 'auroc_binary': 'AUROC binary (14)',
           **{key: f'AUROC {label}' for _, key, label in BASELINES.values()}}
SHORT = {'auroc': 'AUROC', 'aupr_in': 'AUPR-In', 'aupr_out': 'AUPR-Out', 'fpr95': 'FPR@95',
         'auroc_sim': 'sim', 'auroc_binary': 'binary',
         **{key: key[len('auroc_'):][:9] for _, key, _ in BASELINES.values()}}


def columns(rows):
    """COLUMNS, then the AUROC of each baseline (baselines.py) that every row has."""
    return COLUMNS + baseline_columns(list(rows))


def class_metrics(scores):
    """COLUMNS and the operating point (at scores['threshold'], if saved) of saved scores."""
    is_normal = np.asarray(scores['is_normal'], bool)
    out = metrics.detection_metrics(is_normal, scores['score'])
    out.update(auroc_sim=metrics.auroc(is_normal, scores['sim']),
               auroc_binary=metrics.auroc(is_normal, scores['binary']),
               binary_ties=metrics.ties_fraction(scores['binary']),
               **{key: metrics.auroc(is_normal, scores[name])
                  for name, key, _ in BASELINES.values() if name in scores},
               **metrics.operating_point(is_normal, scores['score'],
                                         scores.get('threshold', np.nan)),
               n_test_inliers=int(is_normal.sum()), n_test_outliers=int((~is_normal).sum()))
    return out


def summarize(results, dataset, paper_auroc=(), **extra):
    """The summary of per-class results: each column's mean and (population) std.
    paper_auroc (config.report.paper_auroc): the paper's AUROC (%) of every class of the
    dataset, shown beside ours; kept only when given."""
    stats = _stats(results)
    if len(paper_auroc):
        extra['paper_auroc'] = [float(v) for v in paper_auroc]
    return dict(dataset=dataset, positive_class=POSITIVE, mean_auroc=stats['auroc']['mean'],
                metrics=stats, **extra, classes={str(r['normal_class']): r for r in results})


def _stats(results):
    return {**{k: dict(mean=float(np.mean([r[k] for r in results])),
                       std=float(np.std([r[k] for r in results]))) for k in columns(results)},
            **operating.stats(results)}


def summarize_multiclass(results, dataset, setting, **extra):
    """The summary of a multi-class run (Table 3): one row per outlier set, mean and std."""
    stats = _stats(results)
    return dict(dataset=dataset, setting=setting, positive_class=POSITIVE,
                mean_auroc=stats['auroc']['mean'], metrics=stats, **extra,
                outlier_sets={r['outlier_set']: r for r in results})


def _multiclass(summary):
    return 'outlier_sets' in summary


def _rows(summary):
    if _multiclass(summary):
        return sorted(summary['outlier_sets'].values(), key=lambda r: r['index'])
    return sorted(summary['classes'].values(), key=lambda r: r['normal_class'])


def _key_name(r):
    """A row's number and name: the normal class, or the outlier set."""
    if 'outlier_set' in r:
        return r['index'], r['outlier_set']
    return r['normal_class'], r['class_name']


def row_dir(workdir, outlier_set):
    """Where a multi-class run keeps one outlier set's scores and plots."""
    return os.path.join(workdir, 'ood_' + re.sub(r'[^A-Za-z0-9_.-]', '_', outlier_set))


def _dir(workdir, summary, r):
    return row_dir(workdir, r['outlier_set']) if _multiclass(summary) else \
        class_dir(workdir, r['normal_class'])


def paper_column(summary):
    """The paper's AUROC (%) of each row of a one-class summary that has paper_auroc, in
    row order; None without them (multi-class summaries have none)."""
    paper = summary.get('paper_auroc')
    if not paper or _multiclass(summary):
        return None
    return [paper[r['normal_class']] for r in _rows(summary)]


def _title(summary):
    if _multiclass(summary):
        return (f'**{summary["dataset"]}** ({summary["setting"]} multi-class) as inliers '
                'against each outlier test set')
    return f'**{summary["dataset"]}**, one-class'


def format_table(summary):
    """The console table (%): one row per normal class, then mean and std."""
    first = ('#', 'outlier set') if _multiclass(summary) else ('class', 'name')
    cols = columns(_rows(summary))
    paper = paper_column(summary)
    head = f'{first[0]:>6} {first[1]:>12}' + ''.join(f' {SHORT[k]:>9}' for k in cols) + \
        (f' {"paper":>9}' if paper else '') + f' {"inliers":>8} {"outliers":>9}'
    lines = [head]
    if _multiclass(summary):
        lines.insert(0, f'inliers: {summary["dataset"]} ({summary["setting"]})')
    for i, r in enumerate(_rows(summary)):
        key, name = _key_name(r)
        lines.append(f'{key:>6} {str(name)[:12]:>12}' + ''.join(
            f' {100 * r[k]:9.2f}' for k in cols) + (f' {paper[i]:9.2f}' if paper else '') +
            f' {r["n_test_inliers"]:>8} {r["n_test_outliers"]:>9}')
    for stat in ('mean', 'std'):
        lines.append(f'{stat:>6} {summary["dataset"][:12]:>12}' + ''.join(
            f' {100 * summary["metrics"][k][stat]:9.2f}' for k in cols) +
            (f' {np.mean(paper):9.2f}' if paper and stat == 'mean' else ''))
    return '\n'.join(lines) + f'\n({POSITIVE})' + learning_check(summary) + operating.console(
        _rows(summary), [_key_name(r) for r in _rows(summary)], first, summary)


def learning_check(summary):
    """A line saying what training added to eq. (13): the trained similarity AUROC against
    the untrained network's (score.baselines 'untrained'), and eq. (15) against both terms."""
    m = summary['metrics']
    if 'auroc_untrained' not in m:
        return ''
    rows = _rows(summary)
    gain = m['auroc_sim']['mean'] - m['auroc_untrained']['mean']
    better = sum(r['auroc_sim'] >= r['auroc_untrained'] for r in rows)
    best_term = max(m['auroc_sim']['mean'], m['auroc_binary']['mean'])
    return (f'\nlearning check: sim (13) {100 * m["auroc_sim"]["mean"]:.2f} trained vs '
            f'{100 * m["auroc_untrained"]["mean"]:.2f} untrained ({100 * gain:+.2f}; trained >= '
            f'untrained in {better} of {len(rows)}); score (15) {100 * m["auroc"]["mean"]:.2f} vs '
            f'its best term {100 * best_term:.2f}')


def to_csv(summary):
    f = io.StringIO()
    w = csv.writer(f, lineterminator='\n')
    first = ['index', 'outlier_set'] if _multiclass(summary) else ['normal_class', 'class_name']
    cols = columns(_rows(summary))
    paper = paper_column(summary)  # As the other columns: a fraction, not percent.
    ops = operating.fields(_rows(summary))  # After the counts: the columns before stay put.
    w.writerow(first + list(cols) + (['paper_auroc'] if paper else []) +
               ['n_test_inliers', 'n_test_outliers'] + list(ops))
    for i, r in enumerate(_rows(summary)):
        w.writerow(list(_key_name(r)) + [f'{r[k]:.6f}' for k in cols] +
                   ([f'{paper[i] / 100:.6f}'] if paper else []) +
                   [r['n_test_inliers'], r['n_test_outliers']] + operating.csv_cells(r, ops))
    for stat in ('mean', 'std'):
        mean = [f'{np.mean(paper) / 100:.6f}' if stat == 'mean' else ''] if paper else []
        w.writerow([stat, summary['dataset']] +
                   [f'{summary["metrics"][k][stat]:.6f}' for k in cols] + mean + ['', ''] +
                   operating.csv_cells(summary['metrics'], ops, stat))
    return f.getvalue()


def to_markdown(summary):
    """As the paper's tables: % per class, then mean ± std."""
    keys = columns(_rows(summary))
    paper = paper_column(summary)
    cols = ['outliers' if _multiclass(summary) else 'class'] + [HEADERS[k] for k in keys] + \
        (['AUROC paper'] if paper else [])
    lines = [f'{_title(summary)} ({POSITIVE}; FPR@95TPR: lower is better)',
             '', '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    labels = []
    for i, r in enumerate(_rows(summary)):
        key, name = _key_name(r)
        label = name if _multiclass(summary) else f'{key} ({name})'
        labels.append(label)
        lines.append(f'| {label} | ' + ' | '.join(
            [f'{100 * r[k]:.1f}' for k in keys] + ([f'{paper[i]:.1f}'] if paper else [])) + ' |')
    lines.append('| **mean ± std** | ' + ' | '.join(
        [f'**{100 * summary["metrics"][k]["mean"]:.1f}** ± '
         f'{100 * summary["metrics"][k]["std"]:.1f}' for k in keys] +
        ([f'**{np.mean(paper):.1f}**'] if paper else [])) + ' |')
    check = learning_check(summary).strip()
    return '\n'.join(lines + ([check] if check else []) +
                     operating.markdown(_rows(summary), labels, cols[0], summary)) + '\n'


def class_dir(workdir, normal_class):
    """A sweep keeps each class in class_<c>/; a one-class run in the workdir itself."""
    d = files.class_dir(workdir, normal_class)
    return d if os.path.isdir(d) else workdir


def load_scores(directory):
    return read_npz(os.path.join(directory, 'scores.npz'),
                    'rerun --mode=eval to score the test set again')


def sections(workdir, summary):
    """Each row's part of report.html: its title, folder (scores.npz, plots), its model's
    folder (bank.npz, metrics.jsonl, autoaug.json) and title, and its row."""
    multi, out = _multiclass(summary), []
    for r in _rows(summary):
        key, name = _key_name(r)
        d = _dir(workdir, summary, r)
        title = (f'{summary["dataset"]} vs {name}' if multi else
                 f'{summary["dataset"]}, normal class {key} ({name})')
        out.append(dict(title=title, directory=d, row=r, model_dir=workdir if multi else d,
                        model_title=summary['dataset'] if multi else title))
    return out


def write_report(workdir, summary, plots=True):
    """results.json, results.csv, results.md and, with plots, each class's plots (plots.py)
    and report.html (page.py), by process 0 of a multi-host run."""
    if not hosts.is_writer():
        return
    write_json(os.path.join(workdir, 'results.json'), summary)
    with open(os.path.join(workdir, 'results.csv'), 'w') as f:
        f.write(to_csv(summary))
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
        f.write(to_markdown(summary))
    if plots:
        parts = sections(workdir, summary)
        plots_lib.plot_sections(parts, load_scores)
        page.write_page(workdir, summary['dataset'], parts)


def write_page(workdir):
    """report.html again from results.json and the plots saved (after corrupted.md)."""
    try:
        summary = read_json(os.path.join(workdir, 'results.json'), 'not used')
        page.write_page(workdir, summary['dataset'], sections(workdir, summary))
    except (FileNotFoundError, DamagedFileError, KeyError, TypeError):
        return  # No results to show (corrupted.md stands alone).


def rebuild(workdir):
    """Every report of a finished run, recomputed from its saved scores; returns the summary."""
    path = os.path.join(workdir, 'results.json')
    if not os.path.exists(path):
        raise FileNotFoundError(f'no results.json in {workdir}: evaluate the run first '
                                '(--mode=eval or train_eval)')
    old = read_json(path, 'rerun --mode=eval to rewrite it')
    results = []
    for r in _rows(old):
        d = _dir(workdir, old, r)
        if not os.path.exists(os.path.join(d, 'scores.npz')):
            raise FileNotFoundError(f'no scores.npz in {d}: evaluate the run again')
        scores = operating.with_threshold(load_scores(d), workdir if _multiclass(old) else d,
                                          r.get('steps', old.get('steps')))
        results.append({**r, **class_metrics(scores)})
    extra = {k: v for k, v in old.items()
             if k not in ('dataset', 'setting', 'positive_class', 'mean_auroc', 'metrics',
                          'classes', 'outlier_sets', 'metric')}
    if _multiclass(old):
        summary = summarize_multiclass(results, old['dataset'], old['setting'], **extra)
    else:
        summary = summarize(results, old['dataset'], **extra)
    write_report(workdir, summary)
    return summary


def universality(run_dirs):
    """Table 1's summary: each finished run's mean metrics, and the mean AUROC of each
    baseline (baselines.py) that every run has, then their mean and std across the runs
    (the paper's measure of universality across datasets), and the verdict line."""
    summaries = []
    for d in run_dirs:
        path = os.path.join(d, 'results.json')
        if not os.path.exists(path):
            raise FileNotFoundError(f'no results.json in {d}: not a finished run')
        s = read_json(path, f'rerun --mode=eval on {d} to rewrite it')
        if 'metrics' not in s:  # Written before these metrics existed: recompute them.
            s = rebuild(d)
        summaries.append((d, s))
    keys = COLUMNS + baseline_columns([s['metrics'] for _, s in summaries])
    runs = [dict(run=d, dataset=s['dataset'], classes=len(_rows(s)),
                 **{k: s['metrics'][k]['mean'] for k in keys}) for d, s in summaries]
    across = {k: dict(mean=float(np.mean([r[k] for r in runs])),
                      std=float(np.std([r[k] for r in runs]))) for k in keys}
    u = dict(positive_class=POSITIVE, columns=list(keys), runs=runs, across=across)
    return dict(u, verdict=universality_verdict(u))


def universality_verdict(u):
    """One line: ours (eq. 15) across the runs against the baseline of the best mean: the
    difference of the means, and ours' std relative to the smallest baseline std ('' when
    no baseline is in every run)."""
    base = [k for k in u['columns'] if k not in COLUMNS]
    if not base:
        return ''
    a, n = u['across'], len(u['runs'])
    best = max(base, key=lambda k: a[k]['mean'])
    tight = min(base, key=lambda k: a[k]['std'])
    name = {key: label for _, key, label in BASELINES.values()}
    what = 'datasets' if len({r['dataset'] for r in u['runs']}) == n else 'runs'
    if a[tight]['std'] > 0:
        spread = f'{a["auroc"]["std"] / a[tight]["std"]:.2f}x ' + (
            'its std' if tight == best else
            f'the smallest baseline std ({name[tight]} {100 * a[tight]["std"]:.1f})')
    else:
        spread = f'std {100 * a["auroc"]["std"]:.1f} against 0 ({name[tight]})'
    return (f'ours {100 * a["auroc"]["mean"]:.1f} ± {100 * a["auroc"]["std"]:.1f} across {n} '
            f'{what}; best baseline ({name[best]}) {100 * a[best]["mean"]:.1f} ± '
            f'{100 * a[best]["std"]:.1f}: {100 * (a["auroc"]["mean"] - a[best]["mean"]):+.1f} '
            f'points, {spread}')


def universality_markdown(u):
    keys = u['columns']
    cols = ['dataset', 'classes'] + [HEADERS[k] for k in keys]
    lines = [f'Universality (Table 1): mean over each run\'s classes, then mean ± std across '
             f'runs ({POSITIVE})', '', '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in u['runs']:
        lines.append(f'| {r["dataset"]} | {r["classes"]} | ' +
                     ' | '.join(f'{100 * r[k]:.1f}' for k in keys) + ' |')
    lines.append(f'| **mean ± std** | {len(u["runs"])} runs | ' + ' | '.join(
        f'**{100 * u["across"][k]["mean"]:.1f}** ± {100 * u["across"][k]["std"]:.1f}'
        for k in keys) + ' |')
    return '\n'.join(lines + (['', u['verdict']] if u['verdict'] else [])) + '\n'


def write_universality(out_dir, run_dirs):
    """universality.json and universality.md in out_dir; returns the Markdown."""
    u = universality(run_dirs)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, 'universality.json'), u)
    md = universality_markdown(u)
    with open(os.path.join(out_dir, 'universality.md'), 'w') as f:
        f.write(md)
    return md


def corrupted_summary(per_class, dataset, severity, source='ours'):
    """Table 2: each corruption's metrics averaged over the normal classes, and the mean over
    corruptions ('identity', the clean test set, is listed but not in that mean)."""
    names = list(next(iter(per_class.values())))
    table = {n: {k: float(np.mean([r[n][k] for r in per_class.values()]))
                 for k in metrics.METRICS} for n in names}
    for n in names:  # And the operating point's rates (operating.means).
        table[n].update(operating.means([r[n] for r in per_class.values()]))
    corrupted = [n for n in names if n != 'identity']
    mean = {k: float(np.mean([table[n][k] for n in corrupted])) for k in metrics.METRICS}
    mean.update(operating.means([table[n] for n in corrupted]))
    return dict(dataset=dataset, severity=severity, source=source, positive_class=POSITIVE,
                corruptions=table, mean_corrupted=mean, classes=per_class)


def corrupted_markdown(summary):
    ops = [k for k in metrics.OPERATING if k in summary['mean_corrupted']]
    cols = ['corruption'] + [metrics.NAMES[k] for k in metrics.METRICS + tuple(ops)]
    source = {'tfds': 'tfds', 'ours': 'our'}.get(summary.get('source', 'ours'))
    level = ('their single level' if summary['severity'] is None else
             f'severity {summary["severity"]}')
    lines = [f'**{summary["dataset"]}**, {source} corrupted test sets at {level}, '
             f'mean over {len(summary["classes"])} normal classes ({POSITIVE}'
             f'{operating.CORRUPTED_NOTE if ops else ""})', '',
             '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    rows = list(summary['corruptions'].items()) + [('**mean (corrupted)**',
                                                    summary['mean_corrupted'])]
    for name, m in rows:
        lines.append(f'| {name} | ' + ' | '.join(operating.cell(m[k], k, '.1f')
                                                 for k in metrics.METRICS + tuple(ops)) + ' |')
    return '\n'.join(lines) + '\n'


def write_corrupted(workdir, summary):
    """corrupted.json and corrupted.md (by process 0); returns the Markdown."""
    md = corrupted_markdown(summary)
    if hosts.is_writer():
        write_json(os.path.join(workdir, 'corrupted.json'), summary)
        with open(os.path.join(workdir, 'corrupted.md'), 'w') as f:
            f.write(md)
        write_page(workdir)  # report.html with Table 2
    return md
