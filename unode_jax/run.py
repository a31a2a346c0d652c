"""Experiments, one pipeline: config -> data -> a plan of model runs -> for each, a trained
model (trained or restored once) -> the mode's evaluators -> reports.

data.setting:
  one_class  train on one normal class, test on the whole test set (Tables 1, 2);
             normal_class = -1 sweeps every class, each in <workdir>/class_<c>/.
  unlabeled  multi-class (Table 3a): every training image of data.name (or of
             data.inlier_classes) is an inlier, labels unused; the inlier test set is
             scored against each of data.outlier_sets.
  labeled    the same with a (K+1)-way head trained on the labels (Table 3b, appendix B.3).

What each --mode does is the table in modes.py; the evaluators are in
evaluation/evaluators.py.
Outputs of each trained model (the workdir, or class_<c>/ in a sweep): config.json,
checkpoints/, metrics.jsonl, bank.npz (training embeddings and predict's threshold),
scores.npz per test image, results.json, roc.png, hist.png, and with
negatives.weights='auto' autoaug.json and autoaug.png; a multi-class run keeps each
outlier set's scores and plots in ood_<name>/. The summary <workdir>/results.{json,csv,md}
is printed as a table (evaluation/report.py).
"""
import os

import numpy as np

from unode_jax import ablation
from unode_jax.data import images as images_lib
from unode_jax.data.registry import load_data
from unode_jax.evaluation import report
from unode_jax.evaluation.evaluators import evaluator, predict_images
from unode_jax.fitting import Fitting, check_data, check_pretrained
from unode_jax.modes import MODES
from unode_jax.plan import model_directories, plan_runs, predict_dir
from unode_jax.runtime import hosts
from unode_jax.runtime.errors import ConfigError, DamagedFileError
from unode_jax.runtime.files import read_json
from unode_jax.serving.export import export_model
from unode_jax.trained import check_trained_with, load_trained, results_key
from unode_jax.validate import training_groups


def _finished(config, run, mode):
    """A sweep's class that a stopped run already trained and scored with these settings
    and images (its results.json's key): its results row. Another key: scored again."""
    done = os.path.join(run.directory, 'results.json')
    if not (run.in_sweep and mode.train and 'test' in mode.evals and os.path.exists(done)):
        return None
    try:
        row = read_json(done, 'evaluating the class again')
    except DamagedFileError as e:
        print(e, flush=True)
        return None
    if row.get('key') != results_key(config, run):
        print(f'{run.title}: {done} was computed with other settings or images; '
              'evaluating again', flush=True)
        return None
    return row


def _one_trained(config, workdir):
    """The trained model predict and export use, trained with config's training fields."""
    directory = predict_dir(config, workdir)
    one_class = config.data.setting == 'one_class'
    check_trained_with(config, [(directory, config.data.normal_class if one_class else None)])
    return load_trained(config, directory, config.data.image_size)


def run(config, workdir, mode='train_eval', classes=None, images=None, threshold=None,
        out=None, export_format='jax'):
    """Train and/or evaluate as `mode` (modes.py) and config.data.setting say; returns the
    summary of the mode's first evaluator (None when it has none).

    One-class: normal_class = -1 sweeps every class (or those in `classes`) in turn, and
    a stopped sweep resumes, skipping classes finished under the same settings and
    images. 'predict' scores `images` (a folder or glob) with the trained model, 'export'
    writes it to the folder `out` (export_format: 'jax' or 'onnx'). A workdir whose models
    were trained with other training fields stops the run before any work
    (trained.check_trained_with).
    """
    if mode not in MODES:
        raise ValueError(f'--mode must be one of {tuple(MODES)}, got {mode!r}')
    m = MODES[mode]
    if mode == 'report':  # From the saved scores alone: no data, model or device work.
        summary = report.rebuild(workdir)
        print(report.format_table(summary), flush=True)
        return summary
    if m.one_class_only and config.data.setting != 'one_class':
        raise ConfigError(f"--mode={mode} is defined for data.setting='one_class' (the "
                          'corrupted evaluation and the ablations): use --mode=train_eval')
    check_pretrained(config)  # Read (and checked) before any work: a bad file stops here.
    if mode == 'predict':  # One trained model and new images; no dataset.
        if not images:
            raise ConfigError('--mode=predict needs --images=FOLDER_OR_GLOB')
        paths = images_lib.list_images(images)  # Nothing there: stops before the restore.
        return predict_images(config, _one_trained(config, workdir), paths, threshold)
    if mode == 'export':  # One trained model as a folder jax and numpy (or ONNX Runtime) scores.
        if not out:
            raise ConfigError('--mode=export needs --out=FOLDER')
        model = _one_trained(config, workdir)
        print(f'wrote {export_model(model, config, out, export_format)}', flush=True)
        return out
    if mode == 'ablate':  # Tables 4-6: a one-class train_eval run per variant.
        return ablation.run_ablation(config, workdir, run, classes)
    # A workdir holds the models of one set of training fields: another stops here.
    check_trained_with(config, model_directories(config, workdir))

    # Process 0 prepares (and caches) the data first; the others then read the cache.
    ds = hosts.writer_first(lambda: load_data(config, workdir), 'loading the data')
    check_data(config, lambda: training_groups(config, ds.y_train, ds.class_names, classes),
               train=m.train, num_classes=ds.num_classes)
    if not len(ds.x_test) and m.needs_test:
        raise ConfigError(f'{ds.name} at {config.data.path} has no test images, which '
                          f'--mode={mode} scores: use --mode=train (or train_eval), then '
                          '--mode=predict --images=...')
    evals = [evaluator(e, config, ds, workdir) for e in m.evals] if len(ds.x_test) else []
    runs = plan_runs(config, ds, workdir, classes)
    n_pad = None
    if len(runs) > 1:  # Pad classes to the largest: one compiled step for all.
        n_pad = int(np.bincount(ds.y_train, minlength=ds.num_classes).max())
    fitting = Fitting(config, workdir, train=m.train, n_pad=n_pad)
    rows = [[] for _ in evals]
    for r in runs:
        done = _finished(config, r, m)
        if done is not None and len(evals) == 1:
            rows[0].append(done)  # Finished before a stop: not redone.
            continue
        model = fitting.model(r, m.train and done is None)
        for i, e in enumerate(evals):
            rows[i].append(done if i == 0 and done is not None else e.run(model))
    if m.train and not len(ds.x_test):
        print(f'{ds.name} has no test images: trained model(s) and feature bank saved in '
              f'{workdir}; score new images with --mode=predict', flush=True)
    summaries = [e.finish(rows[i], fitting.embedder_description) for i, e in enumerate(evals)]
    return summaries[0] if summaries else None
