"""A trained model, made once per model run: trained (or resumed) or restored from its
newest readable checkpoint, BatchNorm statistics as score.bn_stats says, its bank of
training embeddings and eq. (15)'s lambda computed and saved in bank.npz. Every
evaluator (evaluation/evaluators.py) reads this one object."""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Optional

import jax
import numpy as np

from unode_jax.augment import autoaug
from unode_jax.data.splits import holdout_split
from unode_jax.evaluation import copies, precise_bn, predict as predict_lib, score
from unode_jax.evaluation.evaluate import embed
from unode_jax.models import compute_dtype
from unode_jax.models.unode import head_classes
from unode_jax.plan import ModelRun
from unode_jax.runtime import fingerprint, hosts
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.files import read_json
from unode_jax.training import train as train_lib
from unode_jax.training.checkpoint import Checkpointer

CONFIG_FILE = 'config.json'


@dataclasses.dataclass
class TrainedModel:
    run: Optional[ModelRun]  # None when restored for predict, without the dataset
    directory: str
    state: Any  # TrainState, BatchNorm statistics as scored
    bank: dict  # eq. (13)'s bank: z and logits of x_fit, 'reference': x_hold's (or None)
    weight: float  # eq. (15)'s lambda
    head: str  # the head term of eq. (14) (score.HEAD_TERMS)
    balance: str  # how lambda was chosen (score.BALANCES)
    holdout_scores: np.ndarray  # eq. (15) of the held-out normal training images
    quantile: float  # predict's threshold is this quantile of holdout_scores (nan: none)
    x_fit: Optional[np.ndarray] = None  # the images trained on
    negative_weights: Optional[np.ndarray] = None  # the hard negatives' weights used
    embedder: Optional[str] = None  # AutoAugOOD's embedder, when it made the weights
    record: Optional[dict] = None  # what it was trained on (fingerprint.training_record)

    @property
    def threshold(self):
        return predict_lib.fit_threshold(self.holdout_scores, self.quantile)

    @property
    def step(self):
        return int(self.state.step)

    def scores(self, x, config):
        """eq. (15) ('score'), (13) ('sim') and (14)'s head term ('binary') of the prepared
        images x (uint8 (N, S, S, 3)), float64: what evaluation and predict score with."""
        return score.unode_scores(self.bank, embed(self.state, x, config), self.balance,
                                  self.head, self.weight)

    def weights_record(self, config):
        """What results.json records of how this model was trained and scored."""
        w = self.negative_weights
        return dict(negative_weights=None if w is None else dict(
                        zip(config.negatives.transforms, map(float, w))),
                    negative_weights_source=config.negatives.weights,
                    autoaug_embedder=self.embedder, outlier_exposure=config.negatives.outliers,
                    score_balance=config.score.balance,
                    spread_share=config.score.spread_share, ensemble=config.score.ensemble,
                    ensemble_views=config.score.ensemble_views, knn_k=config.score.knn_k,
                    copies=list(config.score.copies), head_kind=self.head,
                    holdout=config.predict.holdout,
                    compute_dtype=compute_dtype(config.model.dtype).name)


def head_of(config):
    """The head's term of eq. (15): binary (eq. 14) or the transform head's (head.kind),
    score.labeled_term in the labeled setting."""
    return config.head.kind if config.data.setting != 'labeled' else config.score.labeled_term


def save_config(config, directory, normal_class=None):
    """<directory>/config.json: the config a model is trained with, which configs/saved.py
    reads back (launch.py without --config); a sweep's class folder gets its class."""
    if not hosts.is_writer():
        return
    if normal_class is not None:
        config = copy.deepcopy(config)
        config.data.normal_class = normal_class
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, CONFIG_FILE), 'w', encoding='utf-8') as f:
        f.write(config.to_json_best_effort(indent=2))


def restore_for_eval(config, workdir, image_size, num_classes=2, record=None):
    """The trained state of workdir's newest readable checkpoint (creates no folder), if its
    record (when it has one) is `record` (model_record; default: config's training fields,
    images not known here)."""
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
    state, meta = restored
    record = record or dict(fields=fingerprint.training_fields(config), images=None)
    fingerprint.check_record(meta.get('record'), record, workdir, required=False)
    return state


def model_record(config, run: ModelRun, x_fit, labels):
    """What run's model is trained on (fingerprint.training_record), with the normal class
    it trains on (a sweep's config says -1)."""
    record = fingerprint.training_record(config, x_fit, labels)
    if run.normal_class is not None:
        record['fields']['data.normal_class'] = run.normal_class
    return record


def fit_images(config, run: ModelRun):
    """(x_fit, x_hold, labels of x_fit): run's training images less predict.holdout's
    held-out ones, which the model trains on."""
    fit, hold = holdout_split(len(run.x_train), config.predict.holdout, config.seed)
    labels = None if run.labels is None else run.labels[fit]
    return run.x_train[fit], run.x_train[hold], labels


def results_key(config, run: ModelRun):
    """The key a run's results.json is computed under (fingerprint.results_key)."""
    x_fit, _, labels = fit_images(config, run)
    return fingerprint.results_key(config, fingerprint.images_record(x_fit, labels))


def holds_model(directory):
    """Whether directory holds a trained model or its results: a checkpoint, bank.npz or
    results.json (a failed start's config.json alone does not count)."""
    ckpt = os.path.join(directory, 'checkpoints')
    if os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt)):
        return True
    return any(os.path.isfile(os.path.join(directory, f))
               for f in (predict_lib.BANK_FILE, 'results.json'))


def check_trained_with(config, directories):
    """Before any work: each (folder, its normal class or None) that holds a model must
    have been trained with config's training fields, as its config.json (or, for a sweep's
    class_<c>/ without one, the sweep's) says; ConfigError naming each that differs."""
    for directory, normal_class in directories:
        if not holds_model(directory):
            continue
        path = os.path.join(directory, CONFIG_FILE)
        sweep = os.path.join(os.path.dirname(os.path.normpath(directory)), CONFIG_FILE)
        from_sweep = not os.path.isfile(path) and normal_class is not None
        path = sweep if from_sweep else path
        if not os.path.isfile(path):
            continue  # Nothing to name fields from: the checkpoint's record is checked.
        saved = fingerprint.flat_fields(read_json(path, 'train in a new workdir'))
        fields = fingerprint.training_fields(config)
        if normal_class is not None:  # A sweep's class folder: the class it trained.
            fields['data.normal_class'] = normal_class
            if from_sweep:
                saved['data.normal_class'] = normal_class
        fingerprint.check_fields(saved, fields, directory)


def train_or_restore(config, run: ModelRun, train, *, weights, embedder=None, outliers=None,
                     n_pad=None, p_train_step=None) -> TrainedModel:
    """run's model, trained (or resumed) on its training images less predict.holdout's
    held-out ones when `train`, else restored; weights=None: AutoAugOOD's, per model."""
    x_fit, x_hold, labels = fit_images(config, run)
    record = model_record(config, run, x_fit, labels)
    embedder_used = None
    if train:
        check_resumable(config, run.directory, record)  # Before AutoAugOOD's minutes.
        if weights is None:
            weights, embedder_used = autoaug_weights(config, run, x_fit, embedder, outliers)
        state = train_lib.train(config, run.directory, x_fit, weights, labels=labels,
                                n_pad=n_pad, p_train_step=p_train_step, outliers=outliers,
                                record=record)
    else:
        num_classes = head_classes(config, labels)
        state = restore_for_eval(config, run.directory, x_fit.shape[1], num_classes, record)
        if weights is None:  # Eval only: the weights this model was trained with, if recorded.
            found = autoaug.cached_weights(run.directory)
            if found is not None:
                weights, embedder_used = found['weights'], found['embedder']
    state = precise_bn.inlier_batch_stats(state, x_fit, config)
    bank, weight, held = make_bank(state, config, run.directory, x_fit, x_hold,
                                   record['images'], weights)
    return TrainedModel(run, run.directory, state, bank, weight, head_of(config),
                        config.score.balance, held, config.predict.quantile, x_fit, weights,
                        embedder_used, record)


def check_resumable(config, directory, record):
    """ConfigError when directory's newest checkpoint was trained with other training
    fields or images than `record` (train() checks the one it restores again)."""
    if not os.path.isdir(os.path.join(directory, 'checkpoints')):
        return
    ckpt = Checkpointer(directory, config.keep_checkpoints, create=False)
    try:
        saved = ckpt.latest_record()
    finally:
        ckpt.close()
    if saved:
        fingerprint.check_record(saved, record, directory)


def autoaug_weights(config, run, x_fit, embedder, outliers):
    """AutoAugOOD's weights for run, computed (and recorded in autoaug.json) by process 0
    and sent to the others; -> (weights, the embedder's description or None)."""
    found = dict(embedder=None)
    weights = np.zeros(len(config.negatives.transforms), np.float32)
    if hosts.is_writer():
        print(f'{run.title}:', flush=True)
        weights, found = autoaug.class_weights(config, run.directory, x_fit, embedder, outliers)
    received = hosts.from_writer(np.asarray(weights, np.float32))
    return (weights if hosts.is_writer() else received), found['embedder']


def make_bank(state, config, directory, x_fit, x_hold, images, negative_weights=None):
    """Embeds the training images (the bank of eq. 13), computes lambda, and saves both with
    the held-out images' scores and threshold in bank.npz, with what they came from (the
    images' record, the evaluation fields); -> (bank, lambda, those scores). The bank
    carries score.knn_k and, with score.copies, its copies' embeddings and weights
    (copies.plan, from the hard negatives' weights the model trained with; None: uniform)."""
    if config.score.copies and negative_weights is None:
        raise ConfigError(f'score.copies weighs each copy by the AutoAugOOD weights the model '
                          f'trained with, and {directory} has no readable autoaug.json: train '
                          'in a new workdir, or score without copies')
    bank = embed(state, x_fit, config)
    head = head_of(config)
    bank['knn_k'] = int(config.score.knn_k)
    plan = copies.plan(config, negative_weights, head)
    if plan is not None:
        bank['copies'].update(plan)
    reference = embed(state, x_hold, config) if len(x_hold) else None
    weight = score.score_weight(bank, config.score.balance, head, reference,
                                config.score.spread_share)
    held = np.zeros((0,))
    if reference is not None:
        held = score.unode_scores(bank, reference, config.score.balance, head, weight)['score']
    bank['reference'] = reference
    predict_lib.save_bank(directory, step=int(state.step), bank=bank, weight=weight, head=head,
                          batch_stats=None if config.score.bn_stats == 'train'
                          else state.batch_stats,
                          balance=config.score.balance, holdout_scores=held,
                          quantile=config.predict.quantile,
                          provenance=dict(images=images, score=fingerprint.bank_fields(config)))
    return bank, weight, held


def load_trained(config, directory, image_size) -> TrainedModel:
    """The model of a trained folder from its checkpoint and bank.npz alone (no dataset):
    what predict scores new images with, exactly as evaluation scored the test set. The
    bank must have been computed with config's evaluation fields, from the images the
    checkpoint's model was trained on (where it records them)."""
    bank = predict_lib.load_bank(directory)
    made = bank['provenance'] or {}
    fingerprint.check_bank(made.get('score'), config,
                           os.path.join(directory, predict_lib.BANK_FILE))
    record = dict(fields=fingerprint.training_fields(config), images=made.get('images'))
    state = predict_lib.with_batch_stats(
        restore_for_eval(config, directory, image_size, bank['logits'].shape[1], record), bank)
    if int(state.step) != bank['step']:
        raise FileNotFoundError(f'{directory}: {predict_lib.BANK_FILE} is from step '
                                f'{bank["step"]} but the checkpoint is at step '
                                f'{int(state.step)}: rerun --mode=eval to refresh it')
    return TrainedModel(None, directory, state, dict(z=bank['z'], logits=bank['logits'],
                                                     knn_k=bank['knn_k'],
                                                     copies=bank['copies']),
                        bank['weight'], bank['head'], bank['balance'], bank['holdout_scores'],
                        config.predict.quantile)  # An evaluation field: it may be changed.
