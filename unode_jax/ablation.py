"""The paper's ablations (Tables 4-6) as one command: `--mode=ablate`.

Every variant is the run config with a few fields overridden, trained and scored at the
same budget (the config's optimiser settings) on the same normal classes
(data.normal_class, -1 = all), each in <workdir>/<variant>/ with the resumable sweep of
run.py, so a stopped ablation resumes and finished variants are not redone.

  Table 4 (negatives)  AutoAugOOD | AutoAugOOD with eq. (6)-(8) literally | uniform |
                       each transform alone | none (NT-Xent on the inlier views only)
  Table 5 (losses)     L_con only | L_CE only | both (= the AutoAugOOD run)
  literal choices      where this config departs from the paper's text, the text's
                       choice: eq. (9)-(11)'s loss, composition of all weighted
                       transforms, lambda = 1, the binary head, eq. (13) on the projection
                       z and on the image alone without test-time copies (both scored from
                       the base run's checkpoints); one the config already makes is skipped
  BatchNorm            statistics recomputed on clean inliers (score.bn_stats)
  Table 6 (score)      sim (13) | binary (14) | both (15), of the AutoAugOOD run
  score balance        eq. (15) with each lambda of score.BALANCES, of the AutoAugOOD run,
                       and the spread balance with equal spreads (score.spread_share = 1,
                       scored from the base run's checkpoints)
  baselines            the untrained network's similarity (the learning check) and
                       pixel-space kNN (score.baselines), beside the AutoAugOOD run

A variant whose head h is not trained (none, L_con only) is scored by its similarity
term (13): adding an untrained head's output would only add noise. Every other variant
is scored by eq. (15). The table goes to <workdir>/ablation.{json,md}.
"""
import copy
import dataclasses
import os
import shutil
import time

import numpy as np

from unode_jax.augment.weights import PAPER_TRANSFORMS
from unode_jax.evaluation import report
from unode_jax.runtime import hosts
from unode_jax.runtime.errors import DamagedFileError
from unode_jax.runtime.files import read_json, write_json


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    table: str  # Which of the paper's tables it belongs to.
    label: str
    overrides: tuple = ()  # ((dotted config field, value), ...)
    score: str = 'auroc'  # The results key that is this variant's AUROC.
    # Changes only how the trained model is scored: it reuses the base run's checkpoints
    # (the same training), so it costs an evaluation, not a training run.
    scoring_only: bool = False


# The tables a row belongs to, in the order they are printed.
NEGATIVES, LOSSES, LITERAL = 'Table 4: negatives', 'Table 5: losses', "The paper's literal choice"
BN, SCORE, BALANCE, BASELINES = ('BatchNorm statistics', 'Table 6: score',
                                 'Score balance (lambda of eq. 15)', 'Baselines')
TABLES = (NEGATIVES, LOSSES, LITERAL, BN, SCORE, BALANCE, BASELINES)


def _fixed(name):
    return Variant(name, NEGATIVES, f'{name} alone',
                   (('negatives.weights', f'{name}=1'),))


VARIANTS = (
    Variant('autoaugood', NEGATIVES, "AutoAugOOD (the config's autoaug settings)",
            (('negatives.weights', 'auto'),)),
    Variant('autoaugood_literal', NEGATIVES,
            'AutoAugOOD, eq. (6)-(8) literally (Jeffreys, tau 1)',
            (('negatives.weights', 'auto'), ('autoaug.divergence', 'jeffreys'),
             ('autoaug.tau', 1.0))),
    Variant('uniform', NEGATIVES, 'uniform weights',
            (('negatives.weights', 'uniform'),)),
    *(_fixed(t) for t in PAPER_TRANSFORMS),
    # No hard negatives: nothing to copy or to name (the binary head, no test-time copies).
    Variant('none', NEGATIVES, 'none: NT-Xent on inlier views only (sim)',
            (('negatives.weights', 'none'), ('score.copies', ()), ('head.kind', 'binary')),
            score='auroc_sim'),
    Variant('con_only', LOSSES, 'L_con only (sim)', (('loss.ce_weight', 0.0),),
            score='auroc_sim'),
    Variant('ce_only', LOSSES, 'L_CE only', (('loss.con_weight', 0.0),)),
    # Where this implementation's defaults depart from the paper's text, the literal choice
    # (appendix C's balance is a row of the score-balance table).
    Variant('paper_loss', LITERAL, 'L_con as eq. (9)-(11): inlier anchors only',
            (('loss.kind', 'paper'),)),
    Variant('paper_lambda', LITERAL, 'lambda = 1 in L_con + lambda L_CE (sec. 3.2)',
            (('loss.ce_weight', 1.0),)),
    Variant('compose_all', LITERAL, 'r ~ U(1, k), k = all weighted transforms (binary head)',
            (('negatives.max_compose', 0), ('head.kind', 'binary'))),
    Variant('binary_head', LITERAL, "the binary head of eq. (12), scored by eq. (14)",
            (('head.kind', 'binary'),)),
    Variant('no_copies', LITERAL, 'eq. (13)-(14) on the image alone (no test-time copies)',
            (('score.copies', ()),), scoring_only=True),
    Variant('projection_sim', LITERAL, 'eq. (13) on the projection z = g(f(x))',
            (('score.features', 'projection'),), scoring_only=True),
    Variant('bn_inliers', BN, 'recomputed on clean inliers after training',
            (('score.bn_stats', 'inliers'),), scoring_only=True),
    Variant('spread_equal', BALANCE, 'eq. (15), balance spread with equal spreads '
            '(score.spread_share = 1)', (('score.balance', 'spread'), ('score.spread_share', 1.0)),
            scoring_only=True),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)
BASE = 'autoaugood'  # Its run gives Table 5's "both", Table 6 and the baselines.
BASE_VARIANT = next(v for v in VARIANTS if v.name == BASE)


def variant_config(config, variant):
    """The run config with the base variant's overrides, then the variant's (a copy;
    config is not changed): every variant differs from the base in its own fields only."""
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
        for field, value in BASE_VARIANT.overrides + variant.overrides:
            node = cfg
            *path, last = field.split('.')
            for p in path:
                node = node[p]
            node[last] = value
    return cfg


def selected(config):
    """The base variant and those ablation.variants lists (all when empty); a transform
    that negatives.transforms does not hold has no "alone" variant, and a variant whose
    config is the base's (a literal choice the config already makes) is not run twice."""
    names = tuple(config.ablation.variants) or VARIANT_NAMES
    fixed = set(PAPER_TRANSFORMS) - set(config.negatives.transforms)
    base = variant_config(config, BASE_VARIANT).to_dict()
    return [v for v in VARIANTS if v.name == BASE or (
        v.name in names and v.name not in fixed and variant_config(config, v).to_dict() != base)]


def _reuse_autoaug(base_dir, vdir):
    """Seeds a variant's class folders with the base run's autoaug.json: class_weights
    reuses it only where its fingerprint (data, transforms, every autoaug setting)
    matches, so a variant with other AutoAugOOD settings still computes its own."""
    for root, _, files in os.walk(base_dir):
        if 'autoaug.json' in files:
            dest = os.path.join(vdir, os.path.relpath(root, base_dir))
            if not os.path.exists(os.path.join(dest, 'autoaug.json')):
                os.makedirs(dest, exist_ok=True)
                shutil.copy(os.path.join(root, 'autoaug.json'), dest)


def _reuse_checkpoints(base_dir, vdir):
    """A scoring-only variant starts from the base run's final checkpoints: its run
    resumes at the last step, trains nothing and scores."""
    for root, dirs, _ in os.walk(base_dir):
        if 'checkpoints' in dirs:
            dest = os.path.join(vdir, os.path.relpath(root, base_dir), 'checkpoints')
            if not os.path.exists(dest):
                shutil.copytree(os.path.join(root, 'checkpoints'), dest)
            dirs.remove('checkpoints')


def _previous(vdir, timing):
    """(summary, seconds) of a variant run before, or None (a damaged record: None)."""
    try:
        summary = read_json(os.path.join(vdir, 'results.json'), 'running the variant again')
        seconds = read_json(timing, 'running the variant again').get('seconds')
    except FileNotFoundError:
        return None
    except DamagedFileError as e:
        print(e, flush=True)
        return None
    return None if seconds is None else (summary, seconds)


def run_ablation(config, workdir, run_fn, classes=None):
    """Trains and scores every selected variant (run_fn = run.run), then writes and returns
    the table. Each variant's run reuses its classes finished before under the same key
    (run.py); a variant whose every class was reused keeps the time it was measured in."""
    rows = {}
    for v in selected(config):
        vdir = os.path.join(workdir, v.name)
        timing = os.path.join(vdir, 'ablation_seconds.json')
        before = _previous(vdir, timing)
        print(f'--- ablation variant {v.name}: {v.label}', flush=True)
        if v.name != BASE and hosts.is_writer():
            _reuse_autoaug(os.path.join(workdir, BASE), vdir)
        if v.scoring_only and hosts.is_writer():
            _reuse_checkpoints(os.path.join(workdir, BASE), vdir)
        hosts.sync(f'ablation_{v.name}')  # Every process sees the copies.
        t0 = time.time()
        summary = run_fn(variant_config(config, v), vdir, 'train_eval', classes=classes)
        seconds = time.time() - t0
        if before is not None and before[0].get('classes') == summary['classes']:
            seconds = before[1]  # Nothing was redone: the time of the run that was.
        write_json(timing, dict(seconds=seconds))
        rows[v.name] = (v, summary, seconds)
    table = ablation_table(rows)
    write_json(os.path.join(workdir, 'ablation.json'), table)
    md = ablation_markdown(table)
    if hosts.is_writer():
        with open(os.path.join(workdir, 'ablation.md'), 'w') as f:
            f.write(md)
    print(md, end='', flush=True)
    return table


def _per_class(summary, key):
    return {c: float(r[key]) for c, r in summary['classes'].items()}


def _row(name, table, label, per_class, seconds=None):
    values = list(per_class.values())
    return dict(name=name, table=table, label=label, mean=float(np.mean(values)),
                std=float(np.std(values)), classes=per_class, seconds=seconds)


def ablation_table(rows):
    """{dataset, classes, rows: [...]} from {variant name: (Variant, summary, seconds)}."""
    _, base, _ = rows[BASE]
    out = []
    for v, summary, seconds in rows.values():
        out.append(_row(v.name, v.table, v.label, _per_class(summary, v.score), seconds))
    out.append(_row('both', LOSSES, 'L_con + lambda L_CE (= autoaugood)',
                    _per_class(base, 'auroc')))
    for key, label in (('auroc_sim', 'similarity, eq. (13)'), ('auroc_binary', 'binary, eq. (14)'),
                       ('auroc', 'both, eq. (15)')):
        out.append(_row(key, SCORE, label, _per_class(base, key)))
    for balance in next(iter(base['classes'].values())).get('balances', {}):
        out.append(_row(f'balance_{balance}', BALANCE,
                        f'eq. (15), balance {balance}',
                        {c: float(r['balances'][balance]['auroc'])
                         for c, r in base['classes'].items()}))
    for key, label in (('auroc_untrained', 'untrained network, sim (13)'),
                       ('auroc_pixel_knn', 'pixel-space kNN')):
        if all(key in r for r in base['classes'].values()):
            out.append(_row(key, BASELINES, label, _per_class(base, key)))
    out.sort(key=lambda r: TABLES.index(r['table']))  # stable: each table's rows together
    classes = sorted(base['classes'], key=int)
    names = {c: base['classes'][c]['class_name'] for c in classes}
    return dict(dataset=base['dataset'], classes=classes, class_names=names,
                positive_class=report.POSITIVE, rows=out)


def ablation_markdown(table):
    classes = table['classes']
    head = ['table', 'variant', 'mean AUROC'] + [f'{c}' for c in classes] + ['time']
    lines = [f'**{table["dataset"]}**: ablation, one-class AUROC % per normal class and mean '
             f'({table["positive_class"]}; every variant at the same budget)', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    last = None
    for r in table['rows']:
        group = r['table'] if r['table'] != last else ''
        last = r['table']
        t = '' if r['seconds'] is None else f'{r["seconds"]:.0f} s'
        lines.append(f'| {group} | {r["label"]} | **{100 * r["mean"]:.1f}** | ' +
                     ' | '.join(f'{100 * r["classes"][c]:.1f}' for c in classes) + f' | {t} |')
    return '\n'.join(lines) + '\n'
