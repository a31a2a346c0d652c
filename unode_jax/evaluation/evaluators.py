"""The evaluators a mode runs (modes.py) on each trained model (trained.py), one contract:

  evaluator = EVALUATORS[name](config, ds, workdir)   # reads what it scores up front
  row = evaluator.run(model)                          # per model: scores, saves, returns
  summary = evaluator.finish(rows)                    # the report over all models

  test       one-class: the test set, per normal class (Tables 1, 4-6); multi-class: the
             inlier test set against each of data.outlier_sets (Table 3)
  corrupted  every corruption of the test set (Table 2; CIFAR-10-C / MNIST-C from tfds, or
             ours), without retraining
Prediction on new images (predict_images) scores one model restored without the dataset.
"""
import os

import numpy as np
from tqdm import tqdm

from unode_jax.data import corrupted as tfds_corrupted, images as images_lib, registry
from unode_jax.data.corruptions import CORRUPTIONS, corrupt
from unode_jax.data.datasets import load_outliers
from unode_jax.data.splits import multiclass_split, one_class_test
from unode_jax.evaluation import grids, plots, predict as predict_lib, report
from unode_jax.evaluation.baselines import Baselines
from unode_jax.evaluation.evaluate import (embed, evaluate_corrupted, evaluate_multiclass,
                                           evaluate_one_class)
from unode_jax.runtime import fingerprint
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.files import write_json, write_npz
from unode_jax.training.metrics_log import log_evaluation

# Corrupted test sets are made once and kept for the next model up to this size (MiB);
# past it each model remakes them (seeded: the same images).
CORRUPTED_CACHE_MB = 2048


def save_scores(directory, is_normal, scores, take=None):
    """scores.npz; with take (indices -> those test images), test_images.npz: the few test
    images the report's grids show, keyed by these scores (grids.py)."""
    os.makedirs(directory, exist_ok=True)
    write_npz(os.path.join(directory, 'scores.npz'), is_normal=is_normal, **{
        k: v for k, v in scores.items() if k not in ('weight', 'is_normal')})
    if take is not None:
        grids.save_images(directory, dict(score=scores['score'], is_normal=is_normal), take)


class OneClassTest:
    """The whole test set, the model's normal class as normal (Tables 1, 4-6)."""

    def __init__(self, config, ds, workdir):
        self.config, self.ds, self.workdir = config, ds, workdir

    def run(self, model):
        config, run = self.config, model.run
        result, scores = evaluate_one_class(model.state, config, model.bank, run.x_test,
                                            run.is_normal, weight=model.weight,
                                            head=model.head,
                                            reference=model.bank['reference'])
        scores.update(Baselines(config, model.x_fit, embed).scores(run.x_test),
                      threshold=np.float64(model.threshold))  # The operating point's (NaN: none)
        result.update(report.class_metrics(dict(scores, is_normal=run.is_normal)))
        result = dict(dataset=self.ds.name, normal_class=run.normal_class,
                      class_name=self.ds.class_names[run.normal_class], steps=model.step,
                      **model.weights_record(config), **result,
                      key=fingerprint.results_key(config, model.record['images']))  # run.py's
        save_scores(model.directory, run.is_normal, scores, grids.take_from(run.x_test))
        log_evaluation(model.directory, model.step, result, config.tensorboard)
        if run.in_sweep:  # A finished class: a resumed sweep reads it back (run.py).
            write_json(os.path.join(model.directory, 'results.json'), result)
        return result

    def finish(self, rows, embedder=None):
        summary = report.summarize(rows, self.ds.name,
                                   negative_weights_source=self.config.negatives.weights,
                                   autoaug_embedder=embedder,
                                   paper_auroc=self.config.report.paper_auroc)
        print(report.format_table(summary), flush=True)
        report.write_report(self.workdir, summary)
        return summary


class MultiClassTest:
    """Table 3: the inlier test set against each outlier set, read before any training."""

    def __init__(self, config, ds, workdir):
        self.config, self.ds, self.workdir = config, ds, workdir
        rest = multiclass_split(ds, config.data.inlier_classes)[3]
        self.sets = outlier_test_sets(config, ds, rest)  # A missing set stops the run here.

    def run(self, model):
        config, ds, run, sets = self.config, self.ds, model.run, self.sets
        results, scores = evaluate_multiclass(model.state, config, model.bank, run.x_test,
                                              sets, weight=model.weight, head=model.head)
        base = Baselines(config, model.x_fit, embed, num_classes=model.bank['logits'].shape[1])
        inlier_base = base.scores(run.x_test)
        for name, x in sets.items():
            outlier_base = base.scores(x)
            scores[name].update({k: np.concatenate([v, outlier_base[k]])
                                 for k, v in inlier_base.items()},
                                threshold=np.float64(model.threshold))  # Inliers' threshold
            results[name].update(report.class_metrics(scores[name]))
        rows = []
        for i, (name, r) in enumerate(results.items()):
            save_scores(report.row_dir(model.directory, name), scores[name]['is_normal'],
                        scores[name], grids.take_from(run.x_test, sets[name]))
            rows.append(dict(index=i, outlier_set=name, **r))
            log_evaluation(model.directory, model.step, r, config.tensorboard,
                           prefix=f'eval_{name}')
        return report.summarize_multiclass(
            rows, ds.name, config.data.setting, steps=model.step, head_term=model.head,
            inlier_classes=[ds.class_names[c] for c in (config.data.inlier_classes or
                                                        range(ds.num_classes))],
            **model.weights_record(config))

    def finish(self, rows, embedder=None):
        summary, = rows
        print(report.format_table(summary), flush=True)
        report.write_report(self.workdir, summary)
        return summary


def outlier_test_sets(config, ds, rest):
    """data.outlier_sets as {name: uint8 images}: a dataset name (its test split), 'rest'
    (the test images of ds's other classes), or [name=]PATH to a .npz (key 'x'), a folder
    or a glob of images (unreadable files are skipped and counted)."""
    d = config.data
    out = {}
    for spec in d.outlier_sets:
        name, _, path = spec.rpartition('=') if '=' in spec else ('', '', spec)
        if spec == 'rest':
            if not len(rest):
                raise ConfigError("data.outlier_sets 'rest' needs data.inlier_classes to leave "
                                  'some classes out')
            out['rest'] = rest
        elif spec in registry.names('bundled', 'tfds'):
            out[spec] = registry.load_dataset(
                spec, data_dir=d.data_dir, download=d.download, image_size=d.image_size,
                cache_dir=d.cache_dir, cache=d.cache).x_test
        elif path.endswith('.npz'):
            out[name or os.path.basename(path)[:-4]] = load_outliers(path, d.image_size)
        else:
            paths = images_lib.list_images(path)  # FileNotFoundError: nothing there
            x, _, errors = images_lib.read_images(paths, d.image_size, resize=d.resize,
                                                  progress=config.progress_bar)
            if errors:
                print(f'outlier set {spec}: {len(errors)} of {len(paths)} files unreadable, '
                      f'skipped (first: {next(iter(errors.items()))})', flush=True)
            if not len(x):
                raise FileNotFoundError(f'outlier set {spec}: no readable image')
            out[name or os.path.basename(os.path.normpath(path))] = x
    return out


class Corrupted:
    """Table 2: each model on every corrupted copy of its test set, no retraining; writes
    corrupted.json per model and corrupted.{json,md} (means over models) in the workdir."""

    def __init__(self, config, ds, workdir):
        if config.data.setting != 'one_class':
            raise ConfigError("the corrupted evaluation (Table 2) is defined for "
                              "data.setting='one_class'")
        self.config, self.ds, self.workdir = config, ds, workdir
        self.source = corruption_source(config)
        self.cache, self.cached_bytes = {}, 0

    def _test_sets(self):
        """(name, images, labels) of each corrupted test set, 'identity' (clean) first."""
        c, d, ds = self.config.corruptions, self.config.data, self.ds
        yield 'identity', ds.x_test, ds.y_test
        if self.source == 'tfds':
            severity = None if d.name == 'mnist' else c.severity  # MNIST-C has one level.
            names = c.names or tfds_corrupted.tfds_corruptions(d.name)
        else:
            names = c.names or CORRUPTIONS
        for name in names:
            if name == 'identity':
                continue
            if name not in self.cache:
                if self.source == 'tfds':
                    x, y = tfds_corrupted.load_corrupted_test(
                        d.name, name, severity, data_dir=d.data_dir, download=d.download,
                        image_size=d.image_size, cache_dir=d.cache_dir, cache=d.cache)
                else:
                    x, y = corrupt(ds.x_test, name, c.severity, c.seed), ds.y_test
                if self.cached_bytes + x.nbytes > CORRUPTED_CACHE_MB * 2 ** 20:
                    yield name, x, y
                    continue
                self.cache[name] = x, y
                self.cached_bytes += x.nbytes
            yield (name, *self.cache[name])

    def run(self, model):
        k = model.run.normal_class
        out = {}
        for name, x, y in tqdm(self._test_sets(), desc=f'corruptions ({k})',
                               disable=not self.config.progress_bar):
            mask, is_normal = one_class_test(y, self.ds.test_anomalous, k)
            out.update(evaluate_corrupted(model.state, self.config, model.bank,
                                          [(name, x if mask is None else x[mask], is_normal)],
                                          weight=model.weight, head=model.head,
                                          threshold=model.threshold))
        write_json(os.path.join(model.directory, 'corrupted.json'), out)
        return k, out

    def finish(self, rows, embedder=None):
        severity = None if self.source == 'tfds' and self.config.data.name == 'mnist' \
            else self.config.corruptions.severity
        summary = report.corrupted_summary({str(k): out for k, out in rows}, self.ds.name,
                                           severity, source=self.source)
        print(report.write_corrupted(self.workdir, summary), end='', flush=True)
        return summary


def corruption_source(config):
    return tfds_corrupted.corruption_source(config.data.name, config.corruptions.source)


def evaluator(name, config, ds, workdir):
    """The evaluator a mode names ('test' is one-class or multi-class by data.setting)."""
    if name == 'test':
        name = 'one_class' if config.data.setting == 'one_class' else 'multiclass'
    return EVALUATORS[name](config, ds, workdir)


EVALUATORS = {'one_class': OneClassTest, 'multiclass': MultiClassTest, 'corrupted': Corrupted}


def predict_images(config, model, paths, threshold=None):
    """Scores the image files `paths` (images.list_images) with a model restored by
    trained.load_trained; writes predictions.csv in its folder and returns (its path, the
    counts of novel/normal/error rows)."""
    if threshold is None:
        threshold = model.threshold
        if np.isnan(threshold):
            raise ConfigError(
                f'{model.directory} was trained on all its normal training images '
                '(predict.holdout=0, the paper\'s protocol), so no held-out scores fit a '
                'threshold: pass --threshold=S, or train with --config.predict.holdout=0.1')
        how = (f'the {model.quantile:g} quantile of {len(model.holdout_scores)} held-out '
               'normal training images')
    else:
        how = 'given by --threshold'
    x, ok, errors = images_lib.read_images(paths, config.data.image_size,
                                           resize=config.data.resize,
                                           progress=config.progress_bar)
    scores = {}
    if len(x):
        s = model.scores(x, config)
        scores = {paths[i]: {k: float(s[k][j]) for k in ('score', 'sim', 'binary')}
                  for j, i in enumerate(ok)}
    out = os.path.join(model.directory, 'predictions.csv')
    counts = predict_lib.write_predictions(out, paths, scores, threshold, errors)
    drawn = plots.plot_predictions(model.directory, [paths[i] for i in ok],
                                   s['score'] if len(x) else [], x, threshold,
                                   model.holdout_scores)
    print(f'{len(paths)} files: {counts["novel"]} novel, {counts["normal"]} normal, '
          f'{counts["error"]} unreadable; threshold {threshold:.4f} ({how}; score below it = '
          f'novel)\nwrote {out}' + ''.join(f', {p}' for p in drawn), flush=True)
    return out, counts
