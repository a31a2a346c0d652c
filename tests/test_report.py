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


def _fake_run(workdir, classes=(0, 1, 2), baselines=(), seed=0, dataset='toy', **extra):
    """A finished sweep as run.py leaves it: class_<c>/scores.npz + results.json per class;
    baselines: names of baselines.BASELINES whose scores it also saved."""
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
        np.savez(d / 'scores.npz', is_normal=is_normal, sim=sim, binary=binary,
                 score=sim + binary, **base)
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
    assert 'positive class' in md and '**mean ± std**' in md and md.count('\n| ') == 5
    table = report.format_table(summary)
    assert 'FPR@95' in table and table.splitlines()[-3].split()[0] == 'mean'
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
