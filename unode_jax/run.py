"""Experiments: train and/or evaluate in the paper's settings, score corrupted test sets, predict.

data.setting:
  one_class  train on one normal class, test on the whole test set (Tables 1, 2);
             normal_class = -1 sweeps every class, each in <workdir>/class_<c>/.
  unlabeled  multi-class (Table 3a): every training image of data.name (or of
             data.inlier_classes) is an inlier, labels unused; the inlier test set is
             scored against each of data.outlier_sets.
  labeled    the same with a (K+1)-way head trained on the labels (Table 3b, appendix B.3).

Outputs of each trained model (the workdir, or class_<c>/ in a sweep): checkpoints/,
metrics.jsonl, bank.npz (training embeddings and predict's threshold), scores.npz per test
image, results.json, roc.png, hist.png, and with negatives.weights='auto' autoaug.json and
autoaug.png; a multi-class run keeps each outlier set's scores and plots in ood_<name>/.
The summary <workdir>/results.{json,csv,md} is printed as a table (report.py).
"""
import copy
import csv
import os

import jax
import numpy as np
from tqdm import tqdm

from unode_jax import ablation
from unode_jax import precise_bn
from unode_jax import predict as predict_lib
from unode_jax import report, score
from unode_jax.baselines import Baselines
from unode_jax import train as train_lib
from unode_jax.augment import autoaug, embedders
from unode_jax.augment.weights import negative_weights
from unode_jax.checkpoint import Checkpointer
from unode_jax.data import corrupted as tfds_corrupted
from unode_jax.data import images as images_lib
from unode_jax.data.corruptions import CORRUPTIONS, corrupt
from unode_jax.data.datasets import DATASETS, load_dataset, load_outliers
from unode_jax.data.folders import FOLDER_DATASETS, load_folder_dataset
from unode_jax.data.splits import (holdout_split, multiclass_split, one_class_split,
                                   one_class_test)
from unode_jax.evaluate import embed, evaluate_corrupted, evaluate_multiclass, evaluate_one_class
from unode_jax.errors import ConfigError, DamagedFileError
from unode_jax.files import read_json, write_npz
from unode_jax.validate import check_training_sizes, validate_config

MODES = ('train', 'eval', 'train_eval', 'all', 'corrupted', 'report', 'predict', 'ablate')
TRAIN_MODES = ('train', 'train_eval', 'all')  # The modes that train (or resume) models.


SKIPPED_FILE = 'skipped_images.csv'


def load_data(config, workdir=None):
    """The dataset config.data names. Skipped unreadable images of a folder dataset are
    counted on stdout and listed in <workdir>/skipped_images.csv (path, reason)."""
    d = config.data
    if d.name not in FOLDER_DATASETS:
        return load_dataset(d.name, data_dir=d.data_dir, download=d.download,
                            image_size=d.image_size, path=d.path,
                            cifar100_coarse=d.cifar100_coarse, cache_dir=d.cache_dir,
                            cache=d.cache)
    extra = dict(mvtec=dict(categories=tuple(d.categories)),
                 folder=dict(anomaly_dirs=tuple(d.anomaly_dirs)),
                 head_ct=dict(seed=config.seed),
                 isic2018=dict(holdout_fraction=d.isic_holdout, seed=config.seed)).get(d.name, {})
    ds, errors = load_folder_dataset(d.name, d.path, image_size=d.image_size, resize=d.resize,
                                     strict=d.strict, progress=config.progress_bar,
                                     cache=d.cache, cache_dir=d.cache_dir, **extra)
    if errors and workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        where = os.path.join(workdir, SKIPPED_FILE)
        # A file name that is not UTF-8 is written as its bytes.
        with open(where, 'w', newline='', encoding='utf-8', errors='surrogateescape') as f:
            writer = csv.writer(f)
            writer.writerow(['path', 'reason'])
            writer.writerows(errors.items())
    if errors:
        print(f'{d.name}: skipped {len(errors)} unreadable image(s)'
              + (f', listed in {where}' if workdir is not None else '')
              + f' (first: {next(iter(errors))!r}: {next(iter(errors.values()))}); '
              '--config.data.strict=True stops instead', flush=True)
    return ds


def save_config(config, directory, normal_class=None):
    """<directory>/config.json: the config a model is trained with, which configs/saved.py
    reads back (launch.py without --config); a sweep's class folder gets its class."""
    if normal_class is not None:
        config = copy.deepcopy(config)
        config.data.normal_class = normal_class
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'config.json'), 'w', encoding='utf-8') as f:
        f.write(config.to_json_best_effort(indent=2))


def restore_for_eval(config, workdir, image_size, num_classes=2):
    """The trained state of workdir's newest readable checkpoint (creates no folder)."""
    restored = None
    if os.path.isdir(os.path.join(workdir, 'checkpoints')):
        state = train_lib.create_train_state(jax.random.key(config.seed), config, image_size,
                                             num_classes=num_classes)
        ckpt = Checkpointer(workdir, config.keep_checkpoints, create=False)
        restored = ckpt.restore(state)
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f'no checkpoint in {os.path.join(workdir, "checkpoints")}: '
                                'train first (--mode=train or train_eval)')
    return restored


def head_of(config):
    return score.HEAD_TERMS[0] if config.data.setting != 'labeled' else config.score.labeled_term


def fit_model(config, workdir, mode, x_train, *, labels=None, weights, embedder=None,
              outliers=None, n_pad=None, p_train_step=None, title=''):
    """Train (or restore) one model on x_train, less predict.holdout's held-out images.

    Returns (the trained state, the images trained on, the held-out images, the negative
    weights used, the AutoAugOOD embedder's description or None).
    """
    fit, hold = holdout_split(len(x_train), config.predict.holdout, config.seed)
    x_fit, x_hold = x_train[fit], x_train[hold]
    labels = None if labels is None else labels[fit]
    embedder_used = None
    if mode in TRAIN_MODES:
        if weights is None:
            print(f'{title}:', flush=True)
            weights, found = autoaug.class_weights(config, workdir, x_fit, embedder, outliers)
            embedder_used = found['embedder']
        state = train_lib.train(config, workdir, x_fit, weights, labels=labels, n_pad=n_pad,
                                p_train_step=p_train_step, outliers=outliers)
    else:
        num_classes = 2 if labels is None else int(labels.max()) + 2
        state = restore_for_eval(config, workdir, x_train.shape[1], num_classes)
        if weights is None:  # Eval only: the weights this model was trained with, if recorded.
            found = autoaug.cached_weights(workdir)
            if found is not None:
                weights, embedder_used = found['weights'], found['embedder']
    state = precise_bn.inlier_batch_stats(state, x_fit, config)
    return state, x_fit, x_hold, weights, embedder_used


def make_bank(state, config, workdir, x_fit, x_hold):
    """Embeds the training images (the bank of eq. 13), computes lambda, and saves both with
    the held-out images' scores and threshold in bank.npz; returns (bank, lambda)."""
    bank = embed(state, x_fit, config)
    head = head_of(config)
    reference = embed(state, x_hold, config) if len(x_hold) else None
    weight = score.score_weight(bank, config.score.balance, head, reference)
    held = np.zeros((0,))
    if reference is not None:
        held = score.unode_scores(bank, reference, config.score.balance, head, weight)['score']
    bank['reference'] = reference
    predict_lib.save_bank(workdir, step=int(state.step), bank=bank, weight=weight, head=head,
                          batch_stats=None if config.score.bn_stats == 'train'
                          else state.batch_stats,
                          balance=config.score.balance, holdout_scores=held,
                          quantile=config.predict.quantile)
    return bank, weight


def _weights_record(config, weights, embedder_used):
    return dict(negative_weights=None if weights is None else dict(
                    zip(config.negatives.transforms, map(float, weights))),
                negative_weights_source=config.negatives.weights,
                autoaug_embedder=embedder_used, outlier_exposure=config.negatives.outliers,
                score_balance=config.score.balance, ensemble=config.score.ensemble,
                holdout=config.predict.holdout)


def _save_scores(directory, is_normal, scores):
    os.makedirs(directory, exist_ok=True)
    write_npz(os.path.join(directory, 'scores.npz'), is_normal=is_normal, **{
        k: v for k, v in scores.items() if k not in ('weight', 'is_normal')})


def run_class(config, workdir, ds, normal_class, mode, *, weights, embedder=None, outliers=None,
              n_pad=None, p_train_step=None):
    """One normal class; weights=None: AutoAugOOD weights from its training images."""
    x_train, x_test, is_normal = one_class_split(ds, normal_class)
    state, x_fit, x_hold, weights, embedder_used = fit_model(
        config, workdir, mode, x_train, weights=weights, embedder=embedder, outliers=outliers,
        n_pad=n_pad, p_train_step=p_train_step,
        title=f'class {normal_class} ({ds.class_names[normal_class]})')
    # Saved in every mode, so --mode=predict can use a model trained with --mode=train.
    bank, weight = make_bank(state, config, workdir, x_fit, x_hold)
    if mode == 'train':
        return None
    if not len(x_test):
        print(f'{ds.name} has no test images: trained model and feature bank saved in '
              f'{workdir}; score new images with --mode=predict', flush=True)
        return None
    result, scores = evaluate_one_class(state, config, bank, x_test, is_normal, weight=weight,
                                        reference=bank['reference'])
    scores.update(Baselines(config, x_fit, embed).scores(x_test))
    result.update(report.class_metrics(dict(scores, is_normal=is_normal)))
    result = dict(dataset=ds.name, normal_class=int(normal_class),
                  class_name=ds.class_names[normal_class], steps=int(state.step),
                  **_weights_record(config, weights, embedder_used), **result)
    _save_scores(workdir, is_normal, scores)
    return result


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
        elif spec in DATASETS and spec != 'arrays':
            out[spec] = load_dataset(spec, data_dir=d.data_dir, download=d.download,
                                     image_size=d.image_size, cache_dir=d.cache_dir,
                                     cache=d.cache).x_test
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


def run_multiclass(config, workdir, ds, mode, *, weights, embedder=None, outliers=None):
    """Table 3: one model on every inlier class, its test set against each outlier set."""
    x_train, labels, x_test, rest = multiclass_split(ds, config.data.inlier_classes)
    labeled = config.data.setting == 'labeled'
    # Read before training, so a missing outlier set stops the run before any work.
    sets = None if mode == 'train' else outlier_test_sets(config, ds, rest)
    state, x_fit, x_hold, weights, embedder_used = fit_model(
        config, workdir, mode, x_train, labels=labels if labeled else None, weights=weights,
        embedder=embedder, outliers=outliers, title=f'{ds.name} ({config.data.setting})')
    bank, weight = make_bank(state, config, workdir, x_fit, x_hold)
    if mode == 'train':
        return None
    results, scores = evaluate_multiclass(state, config, bank, x_test, sets, weight=weight,
                                          head=head_of(config))
    base = Baselines(config, x_fit, embed, num_classes=bank['logits'].shape[1])
    inlier_base = base.scores(x_test)
    for name, x in sets.items():
        outlier_base = base.scores(x)
        scores[name].update({k: np.concatenate([v, outlier_base[k]])
                             for k, v in inlier_base.items()})
        results[name].update(report.class_metrics(scores[name]))
    rows = []
    for i, (name, r) in enumerate(results.items()):
        _save_scores(report.row_dir(workdir, name), scores[name]['is_normal'], scores[name])
        rows.append(dict(index=i, outlier_set=name, **r))
    summary = report.summarize_multiclass(
        rows, ds.name, config.data.setting, steps=int(state.step), head_term=head_of(config),
        inlier_classes=[ds.class_names[c] for c in (config.data.inlier_classes or
                                                    range(ds.num_classes))],
        **_weights_record(config, weights, embedder_used))
    return summary


def corrupted_test_sets(config, ds):
    """(name, images, labels) of each corrupted test set, 'identity' (clean) first: tfds'
    CIFAR-10-C / MNIST-C, or our corruptions of the test set (config.corruptions)."""
    c, d = config.corruptions, config.data
    yield 'identity', ds.x_test, ds.y_test
    if corruption_source(config) == 'tfds':
        severity = None if d.name == 'mnist' else c.severity  # MNIST-C has one level.
        for name in c.names or tfds_corrupted.tfds_corruptions(d.name):
            if name == 'identity':
                continue
            x, y = tfds_corrupted.load_corrupted_test(d.name, name, severity,
                                                      data_dir=d.data_dir, download=d.download,
                                                      image_size=d.image_size,
                                                      cache_dir=d.cache_dir, cache=d.cache)
            yield name, x, y
    else:
        for name in c.names or CORRUPTIONS:
            yield name, corrupt(ds.x_test, name, c.severity, c.seed), ds.y_test


def corruption_source(config):
    return tfds_corrupted.corruption_source(config.data.name, config.corruptions.source)


def run_corrupted(config, workdir, ds, classes=None):
    """Table 2: each trained class scored on every corruption of its test set, no retraining.

    Writes corrupted.json per class and corrupted.{json,md} (means over classes) in workdir.
    """
    if config.data.setting != 'one_class':
        raise ConfigError("the corrupted evaluation (Table 2) is defined for "
                          "data.setting='one_class'")
    c = config.data.normal_class
    todo = [c] if c >= 0 else (range(ds.num_classes) if classes is None else classes)
    models = []  # Each class's model and bank, so every test set is made or read once.
    for k in todo:
        class_dir = workdir if c >= 0 else os.path.join(workdir, f'class_{k}')
        x_train = one_class_split(ds, k)[0]
        state = restore_for_eval(config, class_dir, x_train.shape[1])
        try:  # A missing or damaged bank is computed again below.
            bank = predict_lib.load_bank(class_dir)
        except (FileNotFoundError, DamagedFileError):
            bank = None
        fit, hold = holdout_split(len(x_train), config.predict.holdout, config.seed)
        state = precise_bn.inlier_batch_stats(state, x_train[fit], config)
        if bank is None or (bank['step'], bank['balance'], bank['batch_stats'] is None) != (
                int(state.step), config.score.balance, config.score.bn_stats == 'train'):
            bank = embed(state, x_train[fit], config)
            reference = embed(state, x_train[hold], config) if len(hold) else None
            bank['weight'] = score.score_weight(bank, config.score.balance, reference=reference)
        models.append((k, class_dir, state, bank))
    per_class = {str(k): {} for k, *_ in models}
    sets = corrupted_test_sets(config, ds)
    for name, x, y in tqdm(sets, desc='corruptions', disable=not config.progress_bar):
        for k, _, state, bank in models:
            mask, is_normal = one_class_test(y, ds.test_anomalous, k)
            per_class[str(k)].update(evaluate_corrupted(
                state, config, bank, [(name, x if mask is None else x[mask], is_normal)],
                weight=bank['weight']))
    for k, class_dir, *_ in models:
        report.write_json(os.path.join(class_dir, 'corrupted.json'), per_class[str(k)])
    severity = None if corruption_source(config) == 'tfds' and config.data.name == 'mnist' \
        else config.corruptions.severity
    summary = report.corrupted_summary(per_class, ds.name, severity,
                                       source=corruption_source(config))
    print(report.write_corrupted(workdir, summary), end='', flush=True)
    return summary


def predict_dir(config, workdir):
    """The trained model predict uses: the workdir, or class_<c>/ of a one-class sweep."""
    c = config.data.normal_class
    if config.data.setting == 'one_class' and os.path.isdir(os.path.join(workdir, f'class_{c}')):
        return os.path.join(workdir, f'class_{c}')
    if os.path.isdir(os.path.join(workdir, 'checkpoints')):
        return workdir
    trained = sorted(n for n in os.listdir(workdir) if n.startswith('class_')) \
        if os.path.isdir(workdir) else []
    if trained:
        raise ConfigError(f'{workdir} is a class sweep: pick one model with '
                          f'--config.data.normal_class=C (trained: {", ".join(trained)})')
    raise FileNotFoundError(f'no trained model in {workdir}')


def run_predict(config, workdir, images, threshold=None):
    """Scores the images of a folder or glob with a trained model; writes predictions.csv in
    the model's directory and returns (its path, the counts of novel/normal/error rows)."""
    if not images:
        raise ConfigError('--mode=predict needs --images=FOLDER_OR_GLOB')
    run_dir = predict_dir(config, workdir)
    bank = predict_lib.load_bank(run_dir)
    if threshold is None:
        threshold = bank['threshold']
        if np.isnan(threshold):
            raise ConfigError(
                f'{run_dir} was trained on all its normal training images (predict.holdout=0, '
                'the paper\'s protocol), so no held-out scores fit a threshold: pass '
                '--threshold=S, or train with --config.predict.holdout=0.1')
        how = (f'the {bank["quantile"]:g} quantile of {len(bank["holdout_scores"])} held-out '
               'normal training images')
    else:
        how = 'given by --threshold'
    paths = images_lib.list_images(images)
    x, ok, errors = images_lib.read_images(paths, config.data.image_size,
                                           resize=config.data.resize,
                                           progress=config.progress_bar)
    state = predict_lib.with_batch_stats(
        restore_for_eval(config, run_dir, config.data.image_size, bank['logits'].shape[1]), bank)
    if int(state.step) != bank['step']:
        raise FileNotFoundError(f'{run_dir}: {predict_lib.BANK_FILE} is from step {bank["step"]} '
                                f'but the checkpoint is at step {int(state.step)}: rerun '
                                '--mode=eval to refresh it')
    scores = {}
    if len(x):
        s = score.unode_scores(bank, embed(state, x, config), bank['balance'], bank['head'],
                               bank['weight'])
        scores = {paths[i]: {k: float(s[k][j]) for k in ('score', 'sim', 'binary')}
                  for j, i in enumerate(ok)}
    out = os.path.join(run_dir, 'predictions.csv')
    counts = predict_lib.write_predictions(out, paths, scores, threshold, errors)
    print(f'{len(paths)} files: {counts["novel"]} novel, {counts["normal"]} normal, '
          f'{counts["error"]} unreadable; threshold {threshold:.4f} ({how}; score below it = '
          f'novel)\nwrote {out}', flush=True)
    return out, counts


def run(config, workdir, mode='train_eval', classes=None, images=None, threshold=None):
    """Train and/or evaluate as config.data.setting says; returns the summary.

    One-class: normal_class = -1 sweeps every class (or those in `classes`) in turn, and
    a stopped sweep resumes, skipping finished classes. mode='all' is train_eval then
    corrupted; 'predict' scores `images` (a folder or glob) with the trained model.
    """
    if mode not in MODES:
        raise ValueError(f'--mode must be one of {MODES}, got {mode!r}')
    if mode == 'report':  # From the saved scores alone: no data, model or device work.
        summary = report.rebuild(workdir)
        print(report.format_table(summary), flush=True)
        return summary
    if config.model.pretrained:  # Read (and checked) before any work: a bad file stops here.
        train_lib.check_pretrained(config, config.data.image_size)
    if mode == 'predict':
        return run_predict(config, workdir, images, threshold)
    if mode == 'ablate':  # Tables 4-6: a one-class run per variant (ablation.py).
        if config.data.setting != 'one_class':
            raise ConfigError("--mode=ablate runs the paper's one-class ablations: "
                              "data.setting must be 'one_class'")
        return ablation.run_ablation(config, workdir, run, classes)
    ds = load_data(config, workdir)
    validate_config(config, num_classes=ds.num_classes, num_devices=jax.local_device_count())
    check_training_sizes(config, ds.y_train, ds.class_names, classes,
                         training=mode in TRAIN_MODES)
    no_test = not len(ds.x_test)
    if no_test and mode in ('eval', 'corrupted', 'all'):
        raise ConfigError(f'{ds.name} at {config.data.path} has no test images, which '
                          f'--mode={mode} scores: use --mode=train (or train_eval), then '
                          '--mode=predict --images=...')
    if mode == 'corrupted':
        return run_corrupted(config, workdir, ds, classes)
    if mode == 'all' and config.data.setting != 'one_class':
        raise ConfigError("--mode=all adds the corrupted evaluation (Table 2), defined for "
                          "data.setting='one_class': use --mode=train_eval")
    if mode in TRAIN_MODES:  # The config the models are trained with (eval leaves it).
        save_config(config, workdir)
    weights = negative_weights(config)  # None: AutoAugOOD, per model.
    embedder = None
    if weights is None and mode not in ('eval',):
        # Before any training: a missing CLIP checkpoint stops the run here.
        embedder = embedders.make_embedder(config)
    outliers = None
    if config.negatives.outliers:
        outliers = load_outliers(config.negatives.outliers, config.data.image_size)
    if config.data.setting != 'one_class':
        summary = run_multiclass(config, workdir, ds, mode, weights=weights, embedder=embedder,
                                 outliers=outliers)
        if summary is not None:
            print(report.format_table(summary), flush=True)
            report.write_report(workdir, summary)
        return summary
    c = config.data.normal_class
    if c >= 0:
        result = run_class(config, workdir, ds, c, mode, weights=weights, embedder=embedder,
                           outliers=outliers)
        results = [] if result is None else [result]
    else:
        # Pad every class to the largest, and share one compiled step across classes.
        n_pad = int(np.bincount(ds.y_train, minlength=ds.num_classes).max())
        p_train_step = train_lib.make_p_train_step(config)
        results = []
        for k in (range(ds.num_classes) if classes is None else classes):
            class_dir = os.path.join(workdir, f'class_{k}')
            done = os.path.join(class_dir, 'results.json')
            if mode in ('train_eval', 'all') and os.path.exists(done):
                try:  # Finished before a stop: not redone.
                    results.append(read_json(done, 'evaluating the class again'))
                    continue
                except DamagedFileError as e:
                    print(f'{e}', flush=True)
            if mode in TRAIN_MODES:
                save_config(config, class_dir, normal_class=k)
            result = run_class(config, class_dir, ds, k, mode, weights=weights,
                               embedder=embedder, outliers=outliers, n_pad=n_pad,
                               p_train_step=p_train_step)
            if result is not None:
                report.write_json(done, result)
                results.append(result)
    if mode == 'train' or no_test:
        return None
    summary = report.summarize(
        results, ds.name, negative_weights_source=config.negatives.weights,
        autoaug_embedder=None if embedder is None else embedder.description)
    print(report.format_table(summary), flush=True)
    report.write_report(workdir, summary)
    if mode == 'all':
        run_corrupted(config, workdir, ds, classes)
    return summary
