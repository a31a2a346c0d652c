"""report.html: one self-contained page per workdir, viewable offline.

Its tables are results.md's (and corrupted.md's, where the corrupted evaluation ran),
then per class (or outlier set) its numbers, its plots (plots.py), its test-image grids,
its AutoAugOOD weights (autoaug.json) and its model's training curves. Every picture is
embedded as a data: URI and the style is inline: no file beside it, no network, no
script. Every string read from a file or a config is HTML-escaped.
"""
import base64
import html
import json
import numbers
import os
import re

import numpy as np

from unode_jax.runtime import hosts

PAGE = 'report.html'
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: right; }
th { background: #f1f1f1; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 4px 4px 4px 0;
      vertical-align: top; }
.note { color: #555; } .bar { display: inline-block; height: 10px; background: #4a7ebb; }
nav a { margin-right: .8em; } .facts { font-size: 13px; margin: .5em 0; }
.facts span { display: inline-block; min-width: 17em; padding: 1px 0; color: #555; }
.facts b { color: #222; font-weight: 600; }
"""
PLOTS = ('roc.png', 'hist.png', 'pr.png')
GRID_PLOTS = ('grid_extremes.png', 'grid_worst.png')


def esc(value):
    """value as HTML text; a file name's bytes that are not UTF-8 (os's surrogate escapes)
    show as U+FFFD rather than stop the page."""
    value = str(value).encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
    return html.escape(value, quote=True)


def image(path, alt):
    """An <img> of the PNG at path as a data: URI; '' where there is no such file."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        return ''
    return (f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" '
            f'alt="{esc(alt)}">')


def _inline(line):
    return re.sub(r'\*\*(.+?)\*\*', r'<b>\1</b>', esc(line))


def _table(lines):
    rows = [[c.strip() for c in line.strip().strip('|').split('|')] for line in lines]
    rows = [r for r in rows if not all(re.fullmatch(r':?-+:?', c) for c in r)]
    head = ''.join(f'<th>{_inline(c)}</th>' for c in rows[0])
    body = ''.join('<tr>' + ''.join(f'<td>{_inline(c)}</td>' for c in r) + '</tr>\n'
                   for r in rows[1:])
    return f'<table>\n<tr>{head}</tr>\n{body}</table>'


def markdown(text):
    """The Markdown the reports write (results.md, corrupted.md): pipe tables, **bold**
    and lines of text, as HTML, every piece escaped."""
    out, table = [], []
    for line in text.splitlines() + ['']:
        if line.lstrip().startswith('|'):
            table.append(line)
            continue
        if table:
            out.append(_table(table))
            table = []
        if line.strip():
            out.append(f'<p>{_inline(line)}</p>')
    return '\n'.join(out)


def _read(path):
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _number(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return esc(v)
    return esc(f'{v:.4f}' if isinstance(v, float) else v)


def details(row):
    """A row's scalar fields (its numbers, the operating point's included, and settings),
    as 'name value' pairs; nested fields and the results key are left out."""
    keys = [k for k, v in row.items() if k != 'key' and
            (v is None or isinstance(v, (str, numbers.Real)))]
    return '<div class="facts">' + ''.join(
        f'<span>{esc(k)} <b>{_number(row[k])}</b></span>' for k in keys) + '</div>'


def weights(model_dir, row):
    """AutoAugOOD's weights of the model (autoaug.json) with each transform's divergence;
    else the row's negative weights (uniform or given); '' where neither is known."""
    aa = None
    text = _read(os.path.join(model_dir, 'autoaug.json'))
    if text:
        try:
            aa = json.loads(text)
        except ValueError:
            aa = None
    if isinstance(aa, dict) and isinstance(aa.get('weights'), list):
        names, w = aa.get('transforms', []), aa['weights']
        div = aa.get('divergences') or [None] * len(w)
        emb = aa.get('embedder', {})
        head = (f'<p class="note">AutoAugOOD (autoaug.json): embedder '
                f'{esc(emb.get("name", "?") if isinstance(emb, dict) else emb)}, '
                f'n={esc(aa.get("n", "?"))}, {esc(aa.get("divergence", "jeffreys"))} '
                f'divergence, tau={esc(aa.get("tau", "?"))}</p>')
    elif isinstance(row.get('negative_weights'), dict):
        names, w = list(row['negative_weights']), list(row['negative_weights'].values())
        div = [None] * len(w)
        head = (f'<p class="note">negative weights: '
                f'{esc(row.get("negative_weights_source", "given"))}</p>')
    else:
        return ''
    rows = sorted(zip(names, w, div), key=lambda t: -float(t[1]))
    body = ''.join(
        f'<tr><td>{esc(n)}</td><td>{float(x):.4f} <span class="bar" style="width:'
        f'{max(0.0, min(1.0, float(x))) * 160:.0f}px"></span></td>'
        f'<td>{"" if j is None else _number(float(j))}</td></tr>\n' for n, x, j in rows)
    return (head + '<table>\n<tr><th>transform</th><th>weight</th><th>divergence J</th>'
            f'</tr>\n{body}</table>')


def section(i, s, shown_models):
    """One class's (or outlier set's) part of the page. s: a report.sections dict."""
    d, m = s['directory'], s['model_dir']
    out = [f'<h2 id="s{i}">{esc(s["title"])}</h2>']
    t = s['row'].get('threshold')  # The row's, as its scores were saved with it.
    if t is not None and np.isfinite(t):
        out.append(f'<p>predict\'s threshold {t:.4f}, the predict.quantile quantile of the '
                   'held-out normal training images\' scores (score below it: novel)</p>')
    else:
        out.append('<p class="note">no fitted threshold: the model was trained on all its '
                   'normal images (predict.holdout = 0)</p>')
    out.append(details(s['row']))
    out.append('<div>' + ''.join(image(os.path.join(d, p), f'{s["title"]}: {p}')
                                 for p in PLOTS) + '</div>')
    out.append('<h3>Test images</h3>')
    grids = ''.join(image(os.path.join(d, p), f'{s["title"]}: {p}') for p in GRID_PLOTS)
    out.append(f'<div>{grids}</div>' if grids else
               '<p class="note">no grids: test_images.npz of these scores is missing '
               '(evaluated before it was saved; rerun --mode=eval to save it)</p>')
    if m not in shown_models:  # A multi-class run's one model: its weights and curves once.
        shown_models.add(m)
        w = weights(m, s['row'])
        if w:
            out.append('<h3>Negative transforms\' weights</h3>' + w)
        curves = image(os.path.join(m, 'curves.png'), f'{s["title"]}: training curves')
        if curves:
            out.append('<h3>Training curves (metrics.jsonl)</h3>' + curves)
    return '\n'.join(out)


def render(workdir, dataset, sections):
    """The page's HTML."""
    name = os.path.basename(os.path.normpath(workdir))
    parts = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             f'<title>UNODE report: {esc(dataset)} ({esc(name)})</title>\n'
             f'<style>{STYLE}</style>\n</head>\n<body>',
             f'<h1>UNODE report: {esc(dataset)}</h1>',
             f'<p class="note">workdir {esc(name)}; normal (inlier) images are the positive '
             'class; higher score = more normal</p>',
             '<nav>' + '<a href="#results">results</a>' + ''.join(
                 f'<a href="#s{i}">{esc(s["title"])}</a>' for i, s in enumerate(sections))
             + '</nav>', '<h2 id="results">Results</h2>']
    results = _read(os.path.join(workdir, 'results.md'))
    parts.append(markdown(results) if results else '<p class="note">no results.md</p>')
    corrupted = _read(os.path.join(workdir, 'corrupted.md'))
    if corrupted:
        parts += ['<h2>Corrupted test sets (Table 2)</h2>', markdown(corrupted)]
    shown = set()
    parts += [section(i, s, shown) for i, s in enumerate(sections)]
    return '\n'.join(parts + ['</body>\n</html>\n'])


def write_page(workdir, dataset, sections):
    """workdir/report.html (by process 0 of a multi-host run); returns its path."""
    path = os.path.join(workdir, PAGE)
    if hosts.is_writer():
        tmp = path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(render(workdir, dataset, sections))
        os.replace(tmp, path)
    return path
