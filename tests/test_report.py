"""Reports from saved scores: tables against numpy, and a rebuild equal to the first report."""
import csv
import json
import os

import numpy as np
import pytest

from tests import children
from unode_jax.configs.fashion_mnist_cpu import PAPER_AUROC
from unode_jax.evaluation import metrics, report
from unode_jax.evaluation.baselines import BASELINES


def _fake_run(workdir, classes=(0, 1, 2), baselines=(), seed=0, dataset='toy', quantile=None,
              **extra):
    """A finished sweep as run.py leaves it: class_<c>/scores.npz + results.json per class;
    baselines: names of baselines.BASELINES whose scores it also saved; quantile: saves a
    threshold with the scores (predict's fit, here on the normal test images' scores)."""
    rng = np.random.default_rng(seed)
    results = []
    for c in classes:
        d = workdir / f'class_{c}'
        d.mkdir(parents=True)
        is_normal = rng.random(200) < 0.2
        sim = rng.normal(size=200) + (1 + c) * is_normal
        binary = rng.random(200) * 0.5 + 0.4 * is_normal
        base = {BASELINES[b][0]: rng.normal(size=200) + (0.3 + 0.4 * i) * is_normal
                for i, b in enumerate(baselines)}
        fitted = {} if quantile is None else dict(
            threshold=np.quantile((sim + binary)[is_normal], quantile))
        np.savez(d / 'scores.npz', is_normal=is_normal, sim=sim, binary=binary,
                 score=sim + binary, **base, **fitted)
        r = dict(dataset=dataset, normal_class=c, class_name=f'c{c}', steps=10,
                 **report.class_metrics(dict(np.load(d / 'scores.npz'))))
        (d / 'results.json').write_text(json.dumps(r))
        results.append(r)
    return report.summarize(results, dataset, negative_weights_source='auto', **extra)


def test_summary_and_tables(tmp_path):
    summary = _fake_run(tmp_path)
    report.write_report(str(tmp_path), summary)
    aurocs = [summary['classes'][c]['auroc'] for c in '012']
    assert summary['metrics']['auroc']['mean'] == pytest.approx(np.mean(aurocs))
    assert summary['metrics']['auroc']['std'] == pytest.approx(np.std(aurocs))
    scores = dict(np.load(tmp_path / 'class_1' / 'scores.npz'))
    assert summary['classes']['1']['fpr95'] == pytest.approx(
        metrics.fpr_at_tpr(scores['is_normal'], scores['score']))
    rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
    assert [r['normal_class'] for r in rows] == ['0', '1', '2', 'mean', 'std']
    assert float(rows[1]['aupr_out']) == pytest.approx(summary['classes']['1']['aupr_out'],
                                                      abs=1e-6)
    md = (tmp_path / 'results.md').read_text()
    # Two tables: the metrics (normal = positive), then the operating point (novel = positive).
    assert 'positive class' in md and md.count('**mean ± std**') == 2 and md.count('\n| ') == 10
    table = report.format_table(summary)
    assert 'FPR@95' in table and table.splitlines()[4].split()[0] == 'mean'
    for c in '012':
        assert (tmp_path / f'class_{c}' / 'roc.png').stat().st_size > 5000
        assert (tmp_path / f'class_{c}' / 'hist.png').stat().st_size > 5000


def test_rebuild_equals_the_first_report_and_needs_the_scores(tmp_path):
    summary = _fake_run(tmp_path)
    report.write_report(str(tmp_path), summary, plots=False)
    first = {n: (tmp_path / n).read_text() for n in ('results.json', 'results.csv', 'results.md')}
    rebuilt = report.rebuild(str(tmp_path))
    assert rebuilt == json.loads(first['results.json'])
    for name, text in first.items():
        assert (tmp_path / name).read_text() == text, name
    os.remove(tmp_path / 'class_2' / 'scores.npz')
    with pytest.raises(FileNotFoundError, match='scores.npz'):
        report.rebuild(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='results.json'):
        report.rebuild(str(tmp_path / 'nothing'))


def test_universality_across_runs_via_launch(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    for d, classes in ((a, (0, 1, 2)), (b, (0, 1))):
        report.write_report(str(d), _fake_run(d, classes), plots=False)
    r = children.launch('--mode=report', f'--workdir={tmp_path / "table1"}', f'--runs={a},{b}')
    assert r.returncode == 0, r.stderr[-2000:]
    u = json.loads((tmp_path / 'table1' / 'universality.json').read_text())
    means = [json.loads((d / 'results.json').read_text())['metrics']['auroc']['mean']
             for d in (a, b)]
    assert [x['auroc'] for x in u['runs']] == pytest.approx(means)
    assert u['across']['auroc']['mean'] == pytest.approx(np.mean(means))
    assert u['across']['auroc']['std'] == pytest.approx(np.std(means))
    assert '**mean ± std** | 2 runs' in r.stdout
    assert (tmp_path / 'table1' / 'universality.md').read_text() == r.stdout


def _outputs(summary):
    return report.format_table(summary), report.to_csv(summary), report.to_markdown(summary)


def test_the_papers_column_beside_ours(tmp_path):
    classes = (1, 4, 6)  # A sweep of some classes: the paper's numbers of those, their mean.
    paper = [PAPER_AUROC[c] for c in classes]
    summary = _fake_run(tmp_path, classes, paper_auroc=PAPER_AUROC)
    assert summary['paper_auroc'] == list(PAPER_AUROC)
    report.write_report(str(tmp_path), summary, plots=False)
    md = (tmp_path / 'results.md').read_text().splitlines()
    header = [c.strip() for c in md[2].strip('|').split('|')]
    assert header[-1] == 'AUROC paper'
    for c, line in zip(classes, md[4:7]):
        assert line.startswith(f'| {c} (c{c}) |') and line.endswith(f' | {PAPER_AUROC[c]:.1f} |')
    assert md[7].startswith('| **mean ± std** |') and md[7].endswith(
        f' | **{np.mean(paper):.1f}** |')
    assert f'{np.mean(paper):.1f}' == '91.5'  # 99.3, 90.1, 85.1
    rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
    assert [float(r['paper_auroc']) for r in rows[:3]] == pytest.approx(
        [p / 100 for p in paper], abs=1e-6)
    assert float(rows[3]['paper_auroc']) == pytest.approx(np.mean(paper) / 100, abs=1e-6)
    assert rows[4]['paper_auroc'] == ''  # std: the paper reports none
    table = report.format_table(summary).splitlines()
    assert table[0].split()[-3:] == ['paper', 'inliers', 'outliers']
    assert [float(t.split()[-3]) for t in table[1:4]] == pytest.approx(paper)
    assert table[4].split()[0] == 'mean' and float(table[4].split()[-1]) == pytest.approx(
        np.mean(paper), abs=0.005)
    # --mode=report rebuilds it from results.json, without the config.
    first = (tmp_path / 'results.md').read_text()
    assert report.rebuild(str(tmp_path))['paper_auroc'] == list(PAPER_AUROC)
    assert (tmp_path / 'results.md').read_text() == first


def test_an_empty_paper_field_changes_nothing(tmp_path):
    summary = _fake_run(tmp_path)
    rows = list(summary['classes'].values())
    empty = report.summarize(rows, 'toy', negative_weights_source='auto', paper_auroc=())
    assert empty == summary and 'paper_auroc' not in empty
    assert _outputs(empty) == _outputs(summary)
    assert all('paper' not in text for text in _outputs(empty))
    with_paper = report.summarize(rows, 'toy', negative_weights_source='auto',
                                  paper_auroc=PAPER_AUROC)
    assert _outputs(with_paper) != _outputs(summary)


def _restated(dirs, key):
    """Per run: the mean of key over its classes, from the classes' own results.json."""
    return [np.mean([json.loads((c / 'results.json').read_text())[key]
                     for c in sorted(d.glob('class_*'))]) for d in dirs]


def test_universality_lists_the_baselines_every_run_has(tmp_path):
    dirs = [tmp_path / n for n in 'abc']
    spec = (((0, 1, 2), ('untrained', 'pixel_knn')), ((0, 1), ('untrained', 'pixel_knn')),
            ((0, 3), ('untrained',)))
    for i, (d, (classes, baselines)) in enumerate(zip(dirs, spec)):
        report.write_report(str(d), _fake_run(d, classes, baselines, seed=i, dataset=f'ds{i}'),
                            plots=False)
    u = report.universality([str(d) for d in dirs])
    assert u['columns'] == list(report.COLUMNS) + ['auroc_untrained']  # c has no pixel kNN
    for key in ('auroc', 'auroc_untrained'):
        means = _restated(dirs, key)
        assert [r[key] for r in u['runs']] == pytest.approx(means, abs=1e-12)
        assert u['across'][key]['mean'] == pytest.approx(np.mean(means), abs=1e-12)
        assert u['across'][key]['std'] == pytest.approx(np.std(means), abs=1e-12)
    md = report.universality_markdown(u)
    assert 'AUROC untrained' in md and 'pixel' not in md
    # The verdict for these fixed fake runs, its numbers worked out apart from report.py
    # (Mann-Whitney U / (n_normal n_novel) of each class's saved scores, normal = positive):
    # per-run mean AUROC (%) of score 93.378, 93.870, 92.560 -> 93.269 ± 0.541; of
    # sim_untrained 59.381, 58.882, 65.217 -> 61.160 ± 2.876 (population std); difference
    # +32.109; std ratio 0.541 / 2.876 = 0.188. None is within 0.002 of a rounding edge.
    assert u['verdict'] == ('ours 93.3 ± 0.5 across 3 datasets; best baseline (untrained) '
                            '61.2 ± 2.9: +32.1 points, 0.19x its std')
    assert md.splitlines()[-2:] == ['', u['verdict']]
    # Both baselines in a and b: both columns, and the verdict against the better one.
    u = report.universality([str(d) for d in dirs[:2]])
    assert u['columns'][-2:] == ['auroc_untrained', 'auroc_pixel_knn']
    means = {k: _restated(dirs[:2], k) for k in u['columns'][-2:]}
    for k, m in means.items():
        assert (u['across'][k]['mean'], u['across'][k]['std']) == pytest.approx(
            (np.mean(m), np.std(m)), abs=1e-12)
    best = max(means, key=lambda k: np.mean(means[k]))
    assert f'best baseline ({BASELINES[best[len("auroc_"):]][2]}) ' in u['verdict']
    assert '| AUROC untrained | AUROC pixel kNN |' in report.universality_markdown(u)


def test_universality_verdict_numbers():
    def u(**across):
        stats = {k: dict(mean=m, std=s) for k, (m, s) in across.items()}
        return dict(columns=list(report.COLUMNS) + [k for k in across if k != 'auroc'],
                    across=stats, runs=[dict(dataset=n) for n in ('a', 'b', 'a')])
    # The better baseline is not the steadier one: ours' std against the smallest.
    line = report.universality_verdict(u(auroc=(0.961, 0.025), auroc_untrained=(0.924, 0.039),
                                         auroc_pixel_knn=(0.80, 0.02)))
    assert line == ('ours 96.1 ± 2.5 across 3 runs; best baseline (untrained) 92.4 ± 3.9: '
                    '+3.7 points, 1.25x the smallest baseline std (pixel kNN 2.0)')
    line = report.universality_verdict(u(auroc=(0.90, 0.01), auroc_pixel_knn=(0.95, 0.0)))
    assert line.endswith('best baseline (pixel kNN) 95.0 ± 0.0: -5.0 points, std 1.0 against '
                         '0 (pixel kNN)')
    assert report.universality_verdict(u(auroc=(0.9, 0.1))) == ''


# The operating point (metrics.operating_point): NOVEL = positive, flagged when score < t.
OPERATING_HEAD = (' class         name         t     TPR@t     FPR@t    prec@t      F1@t     F1max'
                  '  t(F1max)')


def _counted(scores, t):
    """TPR, FPR, precision and F1 of the flag score < t, counted from saved scores."""
    novel = ~np.asarray(scores['is_normal'], bool)
    flagged = scores['score'] < t
    tp, fp = int(np.sum(flagged & novel)), int(np.sum(flagged & ~novel))
    fn = int(novel.sum()) - tp
    return dict(tpr_at_threshold=tp / (tp + fn), fpr_at_threshold=fp / int((~novel).sum()),
                precision_at_threshold=tp / (tp + fp), f1_at_threshold=2 * tp / (2 * tp + fp + fn))


def test_the_operating_point_in_every_report(tmp_path):
    summary = _fake_run(tmp_path, quantile=0.05)
    report.write_report(str(tmp_path), summary, plots=False)
    for c in '012':
        scores = dict(np.load(tmp_path / f'class_{c}' / 'scores.npz'))
        r = summary['classes'][c]
        assert r['threshold'] == float(scores['threshold'])
        assert {k: r[k] for k in metrics.OPERATING[:4]} == pytest.approx(
            _counted(scores, r['threshold']), abs=1e-12)
        assert r['f1_max'] >= r['f1_at_threshold']
    tprs = [summary['classes'][c]['tpr_at_threshold'] for c in '012']
    m = summary['metrics']['tpr_at_threshold']
    assert (m['mean'], m['std']) == pytest.approx((np.mean(tprs), np.std(tprs)))
    assert 'threshold' not in summary['metrics']  # Each model's scores have their own scale.
    # The console: the AUROC table as before, a blank line, then the operating point's block.
    lines = report.format_table(summary).splitlines()
    assert lines[4].split()[0] == 'mean' and lines[6].startswith('(normal (inlier)')
    start = lines.index(OPERATING_HEAD)
    assert start == 8 and lines[7] == ''
    assert [x.split()[0] for x in lines[start + 1:start + 6]] == ['0', '1', '2', 'mean', 'std']
    r = summary['classes']['1']
    assert lines[start + 2].split()[2:] == [f'{r["threshold"]:.4f}'] + [
        f'{100 * r[k]:.2f}' for k in metrics.OPERATING] + [f'{r["f1_max_threshold"]:.4f}']
    assert lines[start + 4].split()[2:] == [  # No mean threshold.
        f'{100 * summary["metrics"][k]["mean"]:.2f}' for k in metrics.OPERATING]
    assert lines[start + 6].startswith('(operating point, NOVEL = positive: an image is '
                                       'flagged novel when its score < t')
    assert max(map(len, lines[start:])) <= 100
    # results.csv: its fields after the counts; results.md: a second table.
    rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
    assert list(rows[0])[-7:] == ['threshold', *metrics.OPERATING, 'f1_max_threshold']
    assert float(rows[1]['fpr_at_threshold']) == pytest.approx(r['fpr_at_threshold'], abs=1e-6)
    assert float(rows[1]['threshold']) == pytest.approx(r['threshold'], abs=1e-6)
    assert rows[3]['threshold'] == '' and float(rows[3]['f1_max']) == pytest.approx(
        summary['metrics']['f1_max']['mean'], abs=1e-6)
    md = (tmp_path / 'results.md').read_text().splitlines()
    i = md.index('| class | t | TPR@t | FPR@t | precision@t | F1@t | F1-max | t of F1-max |')
    assert md[i - 2].startswith('Operating point (%, NOVEL = positive')
    assert md[i + 3].startswith(f'| 1 (c1) | {r["threshold"]:.4f} | '
                                f'{100 * r["tpr_at_threshold"]:.1f} | ')
    assert md[i + 5].startswith('| **mean ± std** |  | **')


def test_without_a_threshold_the_table_still_prints(tmp_path):
    """predict.holdout=0: no fitted threshold, so '-' at it; F1-max is threshold-free."""
    summary = _fake_run(tmp_path)
    report.write_report(str(tmp_path), summary, plots=False)
    saved = json.loads((tmp_path / 'results.json').read_text())['classes']['0']
    assert all(saved[k] is None for k in ('threshold',) + metrics.OPERATING[:4])
    assert summary['metrics']['fpr_at_threshold'] == dict(mean=None, std=None)
    lines = report.format_table(summary).splitlines()
    start = lines.index(OPERATING_HEAD)
    row = lines[start + 1].split()
    assert row[2:7] == ['-'] * 5 and float(row[7]) == pytest.approx(
        100 * summary['classes']['0']['f1_max'], abs=0.005)
    assert lines[start + 4].split()[2:] == ['-'] * 4 + [
        f'{100 * summary["metrics"]["f1_max"]["mean"]:.2f}']
    rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
    assert rows[0]['threshold'] == rows[0]['tpr_at_threshold'] == '' and rows[0]['f1_max']
    assert '| 0 (c0) | - | - | - | - | - | ' in (tmp_path / 'results.md').read_text()
    assert report.rebuild(str(tmp_path)) == json.loads((tmp_path / 'results.json').read_text())


def test_a_rebuild_recomputes_the_operating_point_at_the_saved_threshold(tmp_path):
    summary = _fake_run(tmp_path, quantile=0.05)
    report.write_report(str(tmp_path), summary, plots=False)
    first = (tmp_path / 'results.json').read_text()
    # A row's own threshold and numbers (stale, edited) are not trusted: scores.npz's are.
    stale = json.loads(first)
    stale['classes']['1'].update(threshold=-5.0, tpr_at_threshold=0.0, f1_max=0.0)
    (tmp_path / 'results.json').write_text(json.dumps(stale))
    assert report.rebuild(str(tmp_path)) == json.loads(first)
    assert (tmp_path / 'results.json').read_text() == first
    # A scores.npz from before the threshold was saved with the scores: bank.npz's, when
    # it is of the row's training step (10); of another step, or none: no threshold.
    d = tmp_path / 'class_1'
    scores = dict(np.load(d / 'scores.npz'))
    t = scores.pop('threshold')
    np.savez(d / 'scores.npz', **scores)
    np.savez(d / 'bank.npz', threshold=t, step=np.int64(10))
    assert report.rebuild(str(tmp_path)) == json.loads(first)
    for bank in (dict(threshold=t, step=np.int64(11)), None):
        os.remove(d / 'bank.npz')
        if bank:
            np.savez(d / 'bank.npz', **bank)
        rebuilt = report.rebuild(str(tmp_path))
        r = rebuilt['classes']['1']
        assert r['threshold'] is None and all(r[k] is None for k in metrics.OPERATING[:4])
        assert r['f1_max'] == summary['classes']['1']['f1_max']
        assert rebuilt['classes']['0'] == summary['classes']['0']
        assert rebuilt['metrics']['tpr_at_threshold'] == dict(mean=None, std=None)


def test_rows_from_before_the_operating_point(tmp_path):
    """A sweep's class scored before the operating point existed (its results.json read
    back by a resumed run): the reports show no operating point rather than fail."""
    summary = _fake_run(tmp_path)
    rows = [{k: v for k, v in r.items() if k not in metrics.OPERATING + metrics.THRESHOLDS}
            for r in summary['classes'].values()]
    rows[0] = summary['classes']['0']  # One new row among old ones.
    old = report.summarize(rows, 'toy')
    assert not set(old['metrics']) & set(metrics.OPERATING)
    table, text, md = _outputs(old)
    assert 'TPR@t' not in table and table.splitlines()[-1].startswith('(normal (inlier)')
    assert 'threshold' not in text and 'Operating point' not in md


def test_the_operating_point_of_a_multiclass_run():
    rng = np.random.default_rng(3)
    rows = []
    for i, name in enumerate(('svhn', 'rest')):
        is_normal = np.arange(120) < 80
        score = rng.normal(size=120) + 1.5 * is_normal
        t = np.quantile(score[is_normal], 0.05)  # The inliers' threshold, as for every set
        rows.append(dict(index=i, outlier_set=name, **report.class_metrics(dict(
            is_normal=is_normal, score=score, sim=score, binary=score, threshold=t))))
        assert rows[-1]['fpr_at_threshold'] == pytest.approx(np.mean(score[is_normal] < t))
    summary = report.summarize_multiclass(rows, 'digits', 'unlabeled')
    lines = report.format_table(summary).splitlines()
    start = lines.index('     #  outlier set         t     TPR@t     FPR@t    prec@t      F1@t'
                        '     F1max  t(F1max)')
    assert lines[start + 2].split()[:2] == ['1', 'rest']
    md = report.to_markdown(summary)
    assert '| outliers | t | TPR@t | FPR@t | precision@t | F1@t | F1-max | t of F1-max |' in md


def test_the_corrupted_table_at_each_class_threshold():
    rng = np.random.default_rng(4)
    per_class = {}
    for c, t in (('0', 0.1), ('1', 0.3)):
        per_class[c] = {}
        for name, shift in (('identity', 1.5), ('noise', 0.5), ('blur', 1.0)):
            is_normal = rng.random(100) < 0.3
            score = rng.normal(size=100) + shift * is_normal
            per_class[c][name] = dict(metrics.detection_metrics(is_normal, score),
                                      **metrics.operating_point(is_normal, score, t))
    summary = report.corrupted_summary(per_class, 'toy', 5)
    for k in metrics.OPERATING:
        assert summary['corruptions']['noise'][k] == pytest.approx(
            np.mean([per_class[c]['noise'][k] for c in '01']))
        assert summary['mean_corrupted'][k] == pytest.approx(np.mean(
            [per_class[c][n][k] for c in '01' for n in ('noise', 'blur')]))
    md = report.corrupted_markdown(summary).splitlines()
    assert md[2] == ('| corruption | AUROC | AUPR-In | AUPR-Out | FPR@95TPR | TPR@t | FPR@t | '
                     'precision@t | F1@t | F1-max |')
    assert 'NOVEL = positive' in md[0]
    noise = summary['corruptions']['noise']
    assert md[5].split(' | ')[6] == f'{100 * noise["fpr_at_threshold"]:.1f}'
    # A class without a threshold (predict.holdout=0): '-' at it, F1-max still averaged.
    for name in per_class['1']:
        per_class['1'][name].update(dict.fromkeys(metrics.OPERATING[:4]), threshold=None)
    md = report.corrupted_markdown(report.corrupted_summary(per_class, 'toy', 5)).splitlines()
    assert md[4].split(' | ')[5:9] == ['-'] * 4 and md[4].split(' | ')[9] != '-'
