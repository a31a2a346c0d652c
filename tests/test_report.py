"""Reports from saved scores: tables against numpy, and a rebuild equal to the first report."""
import csv
import json
import os

import numpy as np
import pytest

from tests import children
from unode_jax import metrics, report


def _fake_run(workdir, classes=(0, 1, 2)):
    """A finished sweep as run.py leaves it: class_<c>/scores.npz + results.json per class."""
    rng = np.random.default_rng(0)
    results = []
    for c in classes:
        d = workdir / f'class_{c}'
        d.mkdir(parents=True)
        is_normal = rng.random(200) < 0.2
        sim = rng.normal(size=200) + (1 + c) * is_normal
        binary = rng.random(200) * 0.5 + 0.4 * is_normal
        np.savez(d / 'scores.npz', is_normal=is_normal, sim=sim, binary=binary,
                 score=sim + binary)
        r = dict(dataset='toy', normal_class=c, class_name=f'c{c}', steps=10,
                 **report.class_metrics(dict(np.load(d / 'scores.npz'))))
        (d / 'results.json').write_text(json.dumps(r))
        results.append(r)
    return report.summarize(results, 'toy', negative_weights_source='auto')


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
