"""The report people look at: the grids' picks, report.html self-contained and escaped,
the plots of a tiny run and of --mode=predict, matplotlib's backend untouched, and the page
in a real headless browser (Debian's chromium; skipped where it is absent)."""
import base64
import html
import html.parser
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from unode_jax.evaluation import grids, page, plots, predict, report
from unode_jax.evaluation.baselines import BASELINES
from unode_jax.evaluation.evaluators import save_scores

PNG = b'\x89PNG\r\n\x1a\n'
NASTY = '<b onmouseover="alert(1)">x&amp;</b> $x_{1$ \'q\''  # HTML, an entity, mathtext
CHROMIUM = '/usr/bin/chromium'


def test_grid_picks_against_a_direct_restatement():
    rng = np.random.default_rng(1)
    score = np.round(rng.normal(size=60), 1)  # Rounded: many ties.
    is_normal = rng.random(60) < 0.3
    got = grids.select(score, is_normal, n=8)
    high = sorted(range(60), key=lambda i: (-score[i], i))  # Ties: the lower index first.
    low = sorted(range(60), key=lambda i: (score[i], i))
    assert list(got['most_normal']) == high[:8]
    assert list(got['least_normal']) == low[:8]
    assert list(got['worst_novel']) == [i for i in high if not is_normal[i]][:8]
    assert list(got['worst_normal']) == [i for i in low if is_normal[i]][:8]
    # By hand: novel 2 is the novel image scored most normal, normal 3 the normal one least.
    got = grids.select([0.9, 0.1, 0.8, 0.2, 0.5], [True, False, False, True, False], n=1)
    assert {k: list(v) for k, v in got.items()} == dict(
        most_normal=[0], least_normal=[1], worst_novel=[2], worst_normal=[3])
    got = grids.select([0.9, 0.1, 0.8], [True, False, False], n=8)  # Fewer than n: all.
    assert list(got['worst_normal']) == [0] and list(got['worst_novel']) == [2, 1]


def test_take_from_indexes_the_concatenation():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8) for n in (3, 5))
    take = grids.take_from(a, b)
    idx = np.array([7, 0, 3, 2, 5])
    np.testing.assert_array_equal(take(idx), np.concatenate([a, b])[idx])
    assert take(np.array([], np.int64)).shape == (0, 4, 4, 3)


def _scores(rng, n=80, shift=1.0):
    is_normal = rng.random(n) < 0.25
    sim = rng.normal(size=n) + shift * is_normal
    return is_normal, dict(score=sim + 0.1 * rng.random(n), sim=sim, binary=rng.random(n),
                           weight=1.0)


def test_grids_show_only_the_images_of_these_scores(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (80, 8, 8, 3), dtype=np.uint8)
    is_normal, s = _scores(rng)
    save_scores(str(tmp_path), is_normal, s, grids.take_from(x))
    saved = np.load(tmp_path / grids.IMAGES_FILE)
    assert len(saved['images']) <= 4 * grids.GRID and saved['images'].dtype == np.uint8
    scores = report.load_scores(str(tmp_path))
    picked = grids.grid_images(str(tmp_path), scores)
    expected = grids.select(s['score'], is_normal)
    for name, (idx, images) in picked.items():
        np.testing.assert_array_equal(idx, expected[name])
        np.testing.assert_array_equal(images, x[idx])
    assert plots.plot_grids(str(tmp_path), scores, 'toy')
    for f in plots.GRID_FILES:
        assert (tmp_path / f).read_bytes().startswith(PNG)
    # Another evaluation rewrites scores.npz without images: no grid, the old ones removed.
    is_normal2, s2 = _scores(np.random.default_rng(3))
    save_scores(str(tmp_path), is_normal2, s2)
    scores2 = report.load_scores(str(tmp_path))
    assert grids.grid_images(str(tmp_path), scores2) is None
    assert not plots.plot_grids(str(tmp_path), scores2, 'toy')
    assert not any((tmp_path / f).exists() for f in plots.GRID_FILES)
    # The same scores with one image fewer, or a damaged file: no grid either.
    save_scores(str(tmp_path), is_normal, s, grids.take_from(x))
    z = dict(np.load(tmp_path / grids.IMAGES_FILE))
    np.savez(tmp_path / grids.IMAGES_FILE, **dict(z, indices=z['indices'][1:],
                                                  images=z['images'][1:]))
    assert grids.grid_images(str(tmp_path), scores) is None
    (tmp_path / grids.IMAGES_FILE).write_bytes(b'PK\x03\x04 not a zip')
    assert grids.grid_images(str(tmp_path), scores) is None


def test_large_test_images_are_kept_downsampled(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (40, 200, 160, 3), dtype=np.uint8)
    is_normal, s = _scores(rng, n=40)
    save_scores(str(tmp_path), is_normal, s, grids.take_from(x))
    assert np.load(tmp_path / grids.IMAGES_FILE)['images'].shape[1:] == (128, 102, 3)


def fake_run(workdir, classes=(0, 1), name=NASTY, seed=0):
    """A finished one-class sweep with everything report.html shows: per class scores.npz
    with both baselines and test_images.npz, bank.npz (class 0 with a fitted threshold,
    class 1 without: holdout 0), metrics.jsonl, and class 0's autoaug.json."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (120, 12, 12, 3), dtype=np.uint8)
    rows = []
    for c in classes:
        d = workdir / f'class_{c}'
        d.mkdir(parents=True)
        is_normal, s = _scores(rng, n=120)
        s.update({BASELINES[b][0]: rng.normal(size=120) + 0.5 * is_normal for b in BASELINES})
        predict.save_bank(str(d), step=10, bank=dict(z=np.ones((4, 3)), logits=np.ones((4, 2))),
                          weight=1.0, head='binary', balance='spread', quantile=0.05,
                          holdout_scores=rng.normal(size=12) + 1 if c == 0 else [])
        s['threshold'] = np.float64(predict.load_bank(str(d))['threshold'])  # As evaluation
        save_scores(str(d), is_normal, s, grids.take_from(x))
        with open(d / 'metrics.jsonl', 'w') as f:
            for step in range(1, 21):
                f.write(json.dumps(dict(step=step, loss=5 - step / 10, loss_ce=1 / step,
                                        acc_bin=step / 20, lr=0.1)) + '\n')
            f.write('{"step": 21, "loss": 2\n')  # Cut by a kill: skipped.
        if c == 0:
            (d / 'autoaug.json').write_text(json.dumps(dict(
                transforms=['rotation', f'cutout{name}'], weights=[0.7, 0.3],
                divergences=[1.5, 0.4], embedder=dict(name=name), n=20, tau=1.0)))
        rows.append(dict(dataset=name, normal_class=c, class_name=f'{name}{c}', steps=10,
                         negative_weights={'rotation': 0.5, 'cutout': 0.5},
                         **report.class_metrics(report.load_scores(str(d)))))
    return report.summarize(rows, name, negative_weights_source='auto')


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def check_self_contained(text):
    """Fails unless the page needs nothing outside itself; returns its <img> count."""
    parser = _Tags()
    parser.feed(text)
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', text, re.I)
    assert 'url(' not in text and '@import' not in text
    assert {t for t, _ in parser.tags}.isdisjoint({'script', 'link', 'iframe', 'object',
                                                   'embed', 'base', 'form'})
    images = [a for t, a in parser.tags if t == 'img']
    for a in images:
        prefix = 'data:image/png;base64,'
        assert a['src'].startswith(prefix), a['src'][:40]
        data = base64.b64decode(a['src'][len(prefix):], validate=True)
        assert data.startswith(PNG)
        Image.open(io.BytesIO(data)).verify()
    for t, a in parser.tags:
        assert set(a) <= {'src', 'alt', 'id', 'href', 'class', 'style', 'lang', 'charset'}, a
        assert a.get('href', '#').startswith('#')
    return len(images)


def test_the_page_is_self_contained_and_escapes_what_it_reads(tmp_path):
    summary = fake_run(tmp_path)
    report.write_report(str(tmp_path), summary)
    text = (tmp_path / 'report.html').read_text(encoding='utf-8')
    # 2 classes: roc, hist, pr, 2 grids each, and each model's training curves.
    assert check_self_contained(text) == 2 * 5 + 2
    for c in (0, 1):
        for f in ('roc.png', 'pr.png', 'hist.png', 'curves.png') + tuple(plots.GRID_FILES):
            assert (tmp_path / f'class_{c}' / f).read_bytes().startswith(PNG), (c, f)
    assert NASTY not in text and 'onmouseover="' not in text and html.escape(NASTY) in text
    assert text.count('<table>') >= 2  # results.md's table and the AutoAugOOD weights
    t0 = plots.saved_threshold(report.load_scores(str(tmp_path / 'class_0')))
    assert t0 is not None and f"predict's threshold {t0:.4f}" in text  # class 0's, fitted
    assert plots.saved_threshold(report.load_scores(str(tmp_path / 'class_1'))) is None
    assert text.count('no fitted threshold') == 1
    assert '<td>rotation</td><td>0.7000' in text and html.escape(f'cutout{NASTY}') in text
    # --mode=report rebuilds the same page from the saved files.
    report.rebuild(str(tmp_path))
    assert (tmp_path / 'report.html').read_text(encoding='utf-8') == text
    # Table 2 (--mode=all's second evaluator) joins the page.
    m = dict(auroc=0.9, aupr_in=0.8, aupr_out=0.95, fpr95=0.3)
    report.write_corrupted(str(tmp_path), report.corrupted_summary(
        {'0': dict(identity=m, blur=m), '1': dict(identity=m, blur=m)}, NASTY, 5))
    text = (tmp_path / 'report.html').read_text(encoding='utf-8')
    assert 'Corrupted test sets' in text and '<td>blur</td>' in text
    assert check_self_contained(text) == 12 and NASTY not in text


def test_markdown_tables_and_text_are_escaped():
    out = page.markdown('**a** <i> & b\n\n| x | <y> |\n|---|---|\n| **1** | 2 & 3 |\n')
    assert out == ('<p><b>a</b> &lt;i&gt; &amp; b</p>\n<table>\n<tr><th>x</th>'
                   '<th>&lt;y&gt;</th></tr>\n<tr><td><b>1</b></td><td>2 &amp; 3</td></tr>\n'
                   '</table>')


def test_predict_plots(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    names = [f'dir/{NASTY}{i}.png' for i in range(20)]
    drawn = plots.plot_predictions(str(tmp_path), names, rng.normal(size=20), x, 0.1,
                                   reference=rng.normal(size=9))
    assert [os.path.basename(p) for p in drawn] == list(plots.PREDICT_FILES)
    assert all(open(p, 'rb').read().startswith(PNG) for p in drawn)
    assert plots.plot_predictions(str(tmp_path), [], [], x[:0], 0.1) == []
    assert not any(os.path.exists(p) for p in drawn)  # No image read: no stale plots.


def test_the_users_matplotlib_backend_is_left_alone(tmp_path):
    import matplotlib

    from unode_jax.augment import autoaug
    before = matplotlib.get_backend()
    matplotlib.use('pdf')  # A backend of the user's that 'Agg' would replace.
    try:
        import matplotlib.pyplot as plt
        figures = plt.get_fignums()
        report.write_report(str(tmp_path), fake_run(tmp_path))
        plots.plot_predictions(str(tmp_path), ['a.png'] * 3, [0.1, 0.5, 0.9],
                               np.zeros((3, 4, 4, 3), np.uint8), 0.4)
        grid = np.linspace(0, 1, 5)
        autoaug.plot_densities(dict(grid=grid, density_original=grid, transforms=['blur'],
                                    density_transformed=[grid], divergences=[1.0],
                                    weights=[1.0], embedder=dict(name='e'), n=5),
                               str(tmp_path / 'autoaug.png'))
        assert (tmp_path / 'autoaug.png').read_bytes().startswith(PNG)
        assert matplotlib.get_backend() == plt.get_backend() == 'pdf'
        assert plt.get_fignums() == figures  # No figure left open in pyplot either.
    finally:
        matplotlib.use(before)


def _dump_dom(page_path, tmp_path):
    """The page in headless chromium, with a probe injected into a copy (the page itself
    has no script): the DOM after load and chromium's stderr (its console log)."""
    probe = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && e.target.tagName))); }, true);
var __ce = console.error;
console.error = function () { window.__errors.push([].join.call(arguments, ' '));
                              __ce.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  var d = document.createElement('pre'); d.id = 'probe';
  d.textContent = 'images=' + imgs.length + ' loaded=' + ok + ' errors=' +
    window.__errors.length + ' height=' + document.body.scrollHeight;
  document.body.appendChild(d); });
</script>"""
    checked = tmp_path / ('probe_' + os.path.basename(page_path))
    checked.write_text(open(page_path, encoding='utf-8').read().replace(
        '<head>', '<head>\n' + probe, 1), encoding='utf-8')
    r = subprocess.run([CHROMIUM, '--headless=new', '--disable-gpu', '--no-sandbox',
                        '--enable-logging=stderr', '--v=0', '--virtual-time-budget=5000',
                        f'--user-data-dir={tmp_path / "chromium"}', '--dump-dom',
                        checked.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r'<pre id="probe">images=(\d+) loaded=(\d+) errors=(\d+) height=(\d+)',
                      r.stdout)
    assert found, r.stdout[-1000:]
    return [int(v) for v in found.groups()], r.stderr


def check_in_chromium(page_path, tmp_path, n_images):
    (images, loaded, errors, height), stderr = _dump_dom(page_path, tmp_path)
    assert images == loaded == n_images and errors == 0 and height > 1000
    assert ':CONSOLE' not in stderr, [l for l in stderr.splitlines() if ':CONSOLE' in l]
    shot = tmp_path / 'report.png'  # Looked at by eye when the page changes; not kept.
    r = subprocess.run([CHROMIUM, '--headless=new', '--disable-gpu', '--no-sandbox',
                        '--hide-scrollbars', f'--user-data-dir={tmp_path / "chromium"}',
                        f'--screenshot={shot}', '--window-size=1200,3000',
                        'file://' + os.path.abspath(page_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and Image.open(shot).size == (1200, 3000), r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f'no {CHROMIUM} (Debian: apt-get install chromium)')
def test_the_page_in_headless_chromium(tmp_path, trained_digits3):
    # The checker catches what it looks for: a broken image and a console error.
    bad = tmp_path / 'bad.html'
    bad.write_text('<!DOCTYPE html><html><head></head><body><img src="data:image/png;'
                   'base64,AAAA"><script>console.error("boom")</script></body></html>')
    (images, loaded, errors, _), stderr = _dump_dom(bad, tmp_path)
    assert (images, loaded) == (1, 0) and errors >= 1 and ':CONSOLE' in stderr
    # Every part of a page, from files (a threshold, AutoAugOOD's weights, names to escape).
    fake = tmp_path / 'fake'
    report.write_report(str(fake), fake_run(fake))
    check_in_chromium(fake / 'report.html', tmp_path, 12)
    # A tiny trained run's page, as the run wrote it.
    real = trained_digits3 / 'report.html'
    check_in_chromium(real, tmp_path, check_self_contained(real.read_text()))


@pytest.mark.slow
def test_a_tiny_runs_report_and_predict(trained_digits3, tmp_path):
    from unode_jax.configs import saved
    from unode_jax.data.registry import load_data
    from unode_jax.run import run
    work = tmp_path / 'w'
    shutil.copytree(trained_digits3, work)
    # Evaluation kept the grids' test images: the test set's own, at the indices picked.
    config = saved.get_config(str(work))
    ds = load_data(config, str(work))
    scores = report.load_scores(str(work))
    np.testing.assert_array_equal(scores['is_normal'], ds.y_test == 3)
    for idx, images in grids.grid_images(str(work), scores).values():
        np.testing.assert_array_equal(images, ds.x_test[idx])
    first = (work / 'report.html').read_text()  # Written at the run's end, in the fixture's
    first = first.replace(trained_digits3.name, 'w')  # folder.
    assert check_self_contained(first) == 6  # roc, hist, pr, 2 grids, the curves
    assert 'no fitted threshold' in first  # The tiny config holds nothing out.
    for f in ('report.html', 'roc.png', 'pr.png', 'curves.png', 'grid_worst.png'):
        os.remove(work / f)
    run(None, str(work), 'report')
    assert (work / 'report.html').read_text() == first
    new = tmp_path / 'new'
    new.mkdir()
    for i in range(5):
        Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(new / f'{i}.png')
    run(config, str(work), 'predict', images=str(new), threshold=0.5)
    assert (work / 'predictions.csv').exists()
    for f in plots.PREDICT_FILES:
        assert (work / f).read_bytes().startswith(PNG)


def test_names_that_are_not_utf8_are_drawn_and_written():
    """A file name's undecodable bytes (os's surrogate escapes) show as U+FFFD in a plot's
    text and on the page, instead of stopping --mode=predict or the report."""
    from unode_jax.evaluation import page, plots
    name = os.fsdecode(b'bad_\xff.png')
    assert plots.text(name) == 'bad_\ufffd.png' and page.esc(name) == 'bad_\ufffd.png'
    assert plots.text('a$b') == r'a\$b' and page.esc('<a>') == '&lt;a&gt;'
