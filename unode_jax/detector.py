"""The detector as a Python object, for arrays in a notebook or a service, with
scikit-learn's novelty-detector names (and PyOD's, mapped in serving/conventions.py):

  from unode_jax import Detector
  det = Detector('digits', **{'optim.num_epochs': 10}).fit(X_normal)
  det.score_samples(X)      # eq. (15), float64, higher = more normal
  det.predict(X)            # +1 normal, -1 novel: below threshold_, fitted on held-out images
  det.decision_function(X)  # score_samples(X) - threshold_: negative = novel
  det.score(X, y)           # AUROC of score_samples against y (+1 normal, -1 novel)
  det = Detector.load('runs/digits/class_1')   # a trained workdir, CLI-made or not

config is a packaged config's name ('digits'), a config file or a ConfigDict; the other
keyword arguments are config overrides by dotted name. They are the estimator's
parameters: get_params / set_params / sklearn.base.clone work on them, and nothing is
read or checked until fit. verbose=False silences fit's output and progress bars.

Images are uint8 (N, H, W) or (N, H, W, C) with C = 1 or 3, or floats in [0, 1], any size,
prepared as the folder datasets and `--mode=predict` prepare them (data/prepare.py:
data.resize, then data.image_size, gray made RGB). fit trains one model on all of them as
normal images (less predict.holdout's share, held out to fit the threshold) in workdir,
or a temporary folder removed with the detector (workdir_ says which); y is ignored, as by
scikit-learn's novelty detectors; the config's dataset and class fields do not apply. It is
the command line's training path (fitting.py): the same checks, AutoAugOOD, training, the
bank and its bank.npz, and a workdir that `--mode=predict` (or Detector.load) reads.
"""
from __future__ import annotations

import contextlib
import io
import tempfile

import numpy as np
from ml_collections import config_dict
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from unode_jax.config_files import load_config_file, saved_config, with_overrides
from unode_jax.data.prepare import prepare_batch
from unode_jax.fitting import Fitting, check_data, check_pretrained
from unode_jax.plan import ModelRun, predict_dir
from unode_jax.runtime import xla_options
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.lock import workdir_lock
from unode_jax.serving.conventions import NORMAL, NoveltyConventions
from unode_jax.trained import check_trained_with, load_trained

# XLA:CPU's library choice (runtime/xla_options.py), as launch.py makes it: XLA reads its
# flags when the backend starts, so this takes effect where nothing has run on JAX yet.
xla_options.set_flags()

PARAMS = ('config', 'workdir', 'verbose')  # __init__'s named parameters; the rest: overrides


def prepare_images(x, config):
    """uint8 or [0, 1] float (N, H, W[, C]) -> uint8 (N, S, S, 3) as the folder datasets and
    --mode=predict prepare each image (S = data.image_size, data.resize)."""
    return prepare_batch(x, config.data.image_size, config.data.resize)


class Detector(NoveltyConventions, OutlierMixin, BaseEstimator):
    """UNODE on arrays of images: fit on normal images; score_samples (higher = more
    normal), decision_function, predict (+1 / -1), threshold_, decision_scores_."""

    def __init__(self, config='digits', workdir=None, verbose=True, **overrides):
        self.config = config
        self.workdir = workdir
        self.verbose = verbose
        self._overrides = dict(overrides)
        self._model = self._config = self._tmp = None

    # -- scikit-learn's parameters: config, workdir, verbose and the overrides by name ------
    def get_params(self, deep=True):
        return dict({p: getattr(self, p) for p in PARAMS}, **self._overrides)

    def set_params(self, **params):
        """Sets parameters (config, workdir, verbose, or overrides by dotted name); they apply
        at the next fit. An override that names no config field fails at that fit."""
        for name, value in params.items():
            if name in PARAMS:
                setattr(self, name, value)
            else:
                self._overrides[name] = value
        return self

    def get_config(self):
        """The ConfigDict: the fitted (or loaded) model's, else config with the overrides
        (a ConfigError names a bad file, field or value)."""
        if self._config is not None:
            return self._config
        config = self.config
        if isinstance(config, str):
            config = load_config_file(config)
        elif isinstance(config, config_dict.ConfigDict):
            config = config_dict.ConfigDict(config)  # A copy: the caller's stays as it was.
        else:
            raise TypeError(f'config must be a config name or file, or a ConfigDict, got '
                            f'{config!r}')
        return with_overrides(config, self._overrides)

    @classmethod
    def load(cls, workdir, **overrides):
        """The detector of a trained workdir (a run, or a sweep's class_<c>/), with its own
        config.json; overrides as launch.py allows them (predict.quantile, ...; a score.*
        field must be the one its bank.npz was computed with: --mode=eval rewrites it)."""
        det = cls(saved_config(workdir, overrides), workdir, **overrides)
        det._config = det.get_config()
        directory = predict_dir(det._config, workdir)
        det._model = load_trained(det._config, directory, det._config.data.image_size)
        return det

    def fit(self, X, y=None):
        """Trains a new model on the images X (every one normal; y is ignored); returns self.

        A detector that holds a model in its own temporary folder trains the new one in a
        new temporary folder. One whose model is in a workdir you named (fitted there, or
        loaded) refuses, as that folder holds the other model: fit a new Detector. A
        workdir holding a model trained with other training fields or on other images
        refuses too; one trained with these on these images is resumed, as a rerun of the
        command line is (runtime/fingerprint.py)."""
        if self._model is not None and self._tmp is None:
            raise ConfigError(f'this Detector holds the model in {self.workdir_}; fit trains a '
                              'new one: fit a new Detector (Detector(config, workdir=NEW), or '
                              'no workdir for a temporary folder)')
        if self._tmp is not None:  # Its own temporary folder: a new one for the new model.
            self._tmp.cleanup()
            self._tmp = self._model = self._config = None
        config = self.get_config()
        if not self.verbose:
            config.progress_bar = False
        check_pretrained(config)
        x = prepare_images(X, config)
        check_data(config, [(f'fit(X) on {len(x)} images', len(x))], flag='batch_size')
        workdir = self.workdir
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix='unode_')
            workdir = self._tmp.name
        check_trained_with(config, [(workdir, None)])  # Before any work.
        quiet = contextlib.nullcontext() if self.verbose else contextlib.redirect_stdout(
            io.StringIO())
        with quiet, workdir_lock(workdir, 'Detector.fit'):
            fitting = Fitting(config, workdir)
            self._model = fitting.model(ModelRun(workdir, 'fit', x, x[:0]))
        self._config = config
        return self

    def __sklearn_is_fitted__(self):
        return self._model is not None

    def _fitted(self):
        if self._model is None:
            raise NotFittedError('this Detector is not fitted: call fit(X) or '
                                 'Detector.load(workdir)')
        return self._model

    # -- the fitted model --------------------------------------------------------------------
    @property
    def model_(self):
        """The trained model (trained.TrainedModel): its state, bank and held-out scores."""
        return self._fitted()

    @property
    def workdir_(self):
        """The folder that holds the fitted model (workdir, or the temporary folder)."""
        return self._fitted().directory

    @property
    def threshold_(self):
        """The predict.quantile quantile of decision_scores_ (nan when predict.holdout = 0:
        then pass threshold= to predict, decision_function or is_novel)."""
        return float(self._fitted().threshold)

    @property
    def decision_scores_(self):
        """eq. (15) of the normal training images held out of training (predict.holdout)."""
        return np.asarray(self._fitted().holdout_scores, np.float64)

    def score_terms(self, X):
        """{'score': eq. (15), 'sim': eq. (13), 'binary': eq. (14)'s head term}, float64."""
        model = self._fitted()
        return model.scores(prepare_images(X, self._config), self._config)

    def score(self, X, y):
        """scikit-learn's one number per data set: the AUROC of score_samples(X) with y's
        normal images (+1, or True) as the positive class, as the paper reports it."""
        y = np.asarray(y)
        normal = y == NORMAL if y.dtype != bool else y
        if len(np.unique(normal)) != 2:
            raise ValueError('score(X, y) needs normal (+1) and novel (-1) images in y; '
                             'score_samples(X) gives each image its score')
        return float(roc_auc_score(normal, self.score_samples(X)))

    def export(self, path, format='jax'):  # noqa: A002 -- the command line's --format
        """Writes the fitted model as a folder; returns path. format 'jax': one that
        unode_jax.serving.exported.load(path) scores with jax and numpy alone
        (serving/export.py); 'onnx': path/model.onnx for ONNX Runtime, its input the prepared
        uint8 batch (serving/onnx_export.py; the [onnx] extra)."""
        from unode_jax.serving.export import export_model
        return export_model(self._fitted(), self._config, path, format)
