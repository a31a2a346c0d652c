"""One-class experiments: train and/or evaluate one normal class, or every class in turn.

Outputs in the workdir (one class) or <workdir>/class_<c>/ (all classes):
checkpoints/, metrics.jsonl, scores.npz (per test image), results.json, roc.png and
hist.png, and with negatives.weights='auto' the AutoAugOOD weights (autoaug.json,
autoaug.png). The summary <workdir>/results.json (and .csv, .md) holds each class's
metrics and test counts with their mean and std, and is printed as a table (report.py).
"""
import json
import os

import jax
import numpy as np

from unode_jax import report
from unode_jax import train as train_lib
from unode_jax.augment import autoaug
from unode_jax.augment.weights import negative_weights
from unode_jax.checkpoint import Checkpointer
from unode_jax.data.datasets import load_dataset, load_outliers
from unode_jax.data.splits import one_class_split
from unode_jax.evaluate import evaluate_corrupted, evaluate_one_class
from unode_jax.validate import validate_config

MODES = ('train', 'eval', 'train_eval', 'corrupted', 'report')


def restore_for_eval(config, workdir, image_size):
    state = train_lib.create_train_state(jax.random.key(config.seed), config, image_size)
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    restored = ckpt.restore(state)
    ckpt.close()
    if restored is None:
        raise FileNotFoundError(f'no checkpoint in {os.path.join(workdir, "checkpoints")}: '
                                'train first (--mode=train or train_eval)')
    return restored


def run_class(config, workdir, ds, normal_class, mode, *, weights, embedder=None, outliers=None,
              n_pad=None, p_train_step=None):
    """weights=None: AutoAugOOD weights from this class's training images, with embedder."""
    x_train, x_test, is_normal = one_class_split(ds, normal_class)
    embedder_used = None
    if mode in ('train', 'train_eval'):
        if weights is None:
            print(f'class {normal_class} ({ds.class_names[normal_class]}):', flush=True)
            weights, found = autoaug.class_weights(config, workdir, x_train, embedder, outliers)
            embedder_used = found['embedder']
        state = train_lib.train(config, workdir, x_train, weights, n_pad=n_pad,
                                p_train_step=p_train_step, outliers=outliers)
        if mode == 'train':
            return None
    else:
        state = restore_for_eval(config, workdir, x_train.shape[1])
        if weights is None:  # Eval only: the weights this class was trained with, if recorded.
            found = autoaug.cached_weights(workdir)
            if found is not None:
                weights, embedder_used = found['weights'], found['embedder']
    result, scores = evaluate_one_class(state, config, x_train, x_test, is_normal)
    result = dict(dataset=ds.name, normal_class=int(normal_class),
                  class_name=ds.class_names[normal_class], steps=int(state.step),
                  negative_weights=None if weights is None else dict(
                      zip(config.negatives.transforms, map(float, weights))),
                  negative_weights_source=config.negatives.weights,
                  autoaug_embedder=embedder_used,
                  outlier_exposure=config.negatives.outliers, score_balance=config.score.balance,
                  ensemble=config.score.ensemble, **result)
    np.savez(os.path.join(workdir, 'scores.npz'), is_normal=is_normal, **{
        k: v for k, v in scores.items() if k != 'weight'})
    return result


def run_corrupted(config, workdir, ds, classes=None):
    """Table 2: each trained class scored on every corruption of its test set, no retraining.

    Writes corrupted.json per class and corrupted.{json,md} (means over classes) in workdir.
    """
    c = config.data.normal_class
    todo = [c] if c >= 0 else (range(ds.num_classes) if classes is None else classes)
    per_class = {}
    for k in todo:
        class_dir = workdir if c >= 0 else os.path.join(workdir, f'class_{k}')
        x_train, x_test, is_normal = one_class_split(ds, k)
        state = restore_for_eval(config, class_dir, x_train.shape[1])
        per_class[str(k)] = evaluate_corrupted(state, config, x_train, x_test, is_normal)
        report.write_json(os.path.join(class_dir, 'corrupted.json'), per_class[str(k)])
    summary = report.corrupted_summary(per_class, ds.name, config.corruptions.severity)
    print(report.write_corrupted(workdir, summary), end='', flush=True)
    return summary


def run(config, workdir, mode='train_eval', classes=None):
    """Train and/or evaluate config.data.normal_class; returns the summary.

    normal_class = -1 sweeps every class (or those in `classes`) in turn.
    """
    if mode not in MODES:
        raise ValueError(f'--mode must be one of {MODES}, got {mode!r}')
    if mode == 'report':  # From the saved scores alone: no data, model or device work.
        summary = report.rebuild(workdir)
        print(report.format_table(summary), flush=True)
        return summary
    ds = load_dataset(config.data.name, data_dir=config.data.data_dir,
                      download=config.data.download, image_size=config.data.image_size,
                      path=config.data.path, cifar100_coarse=config.data.cifar100_coarse)
    validate_config(config, num_classes=ds.num_classes, num_devices=jax.local_device_count())
    if mode == 'corrupted':
        return run_corrupted(config, workdir, ds, classes)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))
    weights = negative_weights(config)  # None: AutoAugOOD, per class.
    embedder = None
    if weights is None and mode != 'eval':
        # Before any training: a missing CLIP checkpoint stops the run here.
        embedder = autoaug.make_embedder(config)
    outliers = None
    if config.negatives.outliers:
        outliers = load_outliers(config.negatives.outliers, config.data.image_size)
    c = config.data.normal_class
    if c >= 0:
        results = [run_class(config, workdir, ds, c, mode, weights=weights, embedder=embedder,
                             outliers=outliers)]
    else:
        # Pad every class to the largest, and share one compiled step across classes.
        n_pad = int(np.bincount(ds.y_train, minlength=ds.num_classes).max())
        p_train_step = train_lib.make_p_train_step(config)
        results = []
        for k in (range(ds.num_classes) if classes is None else classes):
            class_dir = os.path.join(workdir, f'class_{k}')
            done = os.path.join(class_dir, 'results.json')
            if mode == 'train_eval' and os.path.exists(done):
                with open(done) as f:
                    results.append(json.load(f))  # Finished before a stop: not redone.
                continue
            result = run_class(config, class_dir, ds, k, mode, weights=weights,
                               embedder=embedder, outliers=outliers, n_pad=n_pad,
                               p_train_step=p_train_step)
            if result is not None:
                report.write_json(done, result)
                results.append(result)
    if mode == 'train':
        return None
    summary = report.summarize(
        results, ds.name, negative_weights_source=config.negatives.weights,
        autoaug_embedder=None if embedder is None else embedder.description)
    print(report.format_table(summary), flush=True)
    report.write_report(workdir, summary)
    return summary
