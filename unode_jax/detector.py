"""The detector as a Python object, for arrays in a notebook or a service (PyOD's and
scikit-learn's fit / score shape):

  from unode_jax import Detector
  det = Detector('configs/digits.py', **{'optim.num_epochs': 10}).fit(x_normal)
  s = det.score(x)          # eq. (15), float64, higher = more normal
  novel = det.is_novel(x)   # s below the threshold fitted on held-out normal images
  det = Detector.load('runs/digits/class_1')   # a trained workdir, CLI-made or not

Images are uint8 (N, H, W) or (N, H, W, C) with C = 1 or 3, any size, prepared as the
folder datasets and `--mode=predict` prepare them (data/images.prepare: data.resize, then
data.image_size, gray made RGB). fit trains one model on all of them as normal images
(less predict.holdout's share, held out to fit the threshold) in the workdir, or a
temporary folder removed with the detector; the config's dataset and class fields do not
apply. It is launch.py's path, piece for piece: the config check, AutoAugOOD, training,
the bank and its bank.npz, and a workdir that `--mode=predict` (or Detector.load) reads.
"""
from __future__ import annotations

import tempfile

import jax
from ml_collections import config_dict

from unode_jax.augment import embedders
from unode_jax.augment.weights import negative_weights
from unode_jax.config_files import load_config_file, saved_config, with_overrides
from unode_jax.data import images as images_lib
from unode_jax.data.datasets import load_outliers
from unode_jax.data.splits import holdout_split
from unode_jax.plan import ModelRun, predict_dir
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime import xla_options
from unode_jax.runtime.lock import workdir_lock
from unode_jax.serving.exported import below_threshold
from unode_jax.trained import check_trained_with, load_trained, save_config, train_or_restore
from unode_jax.training import train as train_lib
from unode_jax.validate import validate_config

# XLA:CPU's library choice (runtime/xla_options.py), as launch.py makes it: XLA reads its
# flags when the backend starts, so this takes effect where nothing has run on JAX yet.
xla_options.set_flags()


def prepare_images(x, config):
    """uint8 (N, H, W) or (N, H, W, C) -> uint8 (N, S, S, 3) as the folder datasets and
    --mode=predict prepare each image (S = data.image_size, data.resize)."""
    return images_lib.prepare_batch(x, config.data.image_size, config.data.resize)


class Detector:
    """UNODE on arrays: fit on normal images, score (higher = more normal), is_novel."""

    def __init__(self, config='configs/digits.py', workdir=None, **overrides):
        if isinstance(config, str):
            config = load_config_file(config)
        elif isinstance(config, config_dict.ConfigDict):
            config = config_dict.ConfigDict(config)  # A copy: the caller's stays as it was.
        else:
            raise TypeError(f'config must be a config file path or a ConfigDict, got {config!r}')
        self.config = with_overrides(config, overrides)
        self.workdir = workdir
        self.model = None  # trained.TrainedModel, once fitted or loaded
        self._tmp = None

    @classmethod
    def load(cls, workdir, **overrides):
        """The detector of a trained workdir (a run, or a sweep's class_<c>/), with its own
        config.json; overrides as launch.py allows them (predict.quantile, ...; a score.*
        field must be the one its bank.npz was computed with: --mode=eval rewrites it)."""
        det = cls(saved_config(workdir, overrides), workdir, **overrides)
        directory = predict_dir(det.config, workdir)
        det.model = load_trained(det.config, directory, det.config.data.image_size)
        return det

    def fit(self, x):
        """Trains a new model on the normal images x (every one normal); returns self.

        A detector that holds a model in its own temporary folder trains the new one in a
        new temporary folder. One whose model is in a workdir you named (fitted there, or
        loaded) refuses, as that folder holds the other model: fit a new Detector. A
        workdir holding a model trained with other training fields or on other images
        refuses too; one trained with these on these images is resumed, as a rerun of the
        command line is (runtime/fingerprint.py)."""
        config = self.config
        if self.model is not None and self._tmp is None:
            raise ConfigError(f'this Detector holds the model in {self.workdir}; fit trains a '
                              'new one: fit a new Detector (Detector(config, workdir=NEW), or '
                              'no workdir for a temporary folder)')
        if self.model is not None:  # Its own temporary folder: a new one for the new model.
            self._tmp.cleanup()
            self._tmp = self.workdir = self.model = None
        validate_config(config, num_devices=jax.device_count())
        x = prepare_images(x, config)
        n_fit = len(holdout_split(len(x), config.predict.holdout, config.seed)[0])
        if n_fit < config.batch_size:
            raise ConfigError(f'{n_fit} training images (of {len(x)}, less predict.holdout), '
                              f'fewer than batch_size={config.batch_size}: pass more images or '
                              f"a smaller batch_size (Detector(..., **{{'batch_size': {n_fit}}}))")
        if config.model.pretrained:
            train_lib.check_pretrained(config, config.data.image_size)
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix='unode_')
            self.workdir = self._tmp.name
        check_trained_with(config, [(self.workdir, None)])  # Before any work.
        weights = negative_weights(config)  # None: AutoAugOOD's, from these images.
        embedder = embedders.make_embedder(config) if weights is None else None
        outliers = (load_outliers(config.negatives.outliers, config.data.image_size)
                    if config.negatives.outliers else None)
        with workdir_lock(self.workdir, 'Detector.fit'):
            save_config(config, self.workdir)
            run = ModelRun(self.workdir, 'fit', x, x[:0])
            self.model = train_or_restore(config, run, True, weights=weights,
                                          embedder=embedder, outliers=outliers)
        return self

    def _fitted(self):
        if self.model is None:
            raise RuntimeError('this Detector is not fitted: call fit(x) or Detector.load(workdir)')
        return self.model

    def score_terms(self, x):
        """{'score': eq. (15), 'sim': eq. (13), 'binary': eq. (14)'s head term}, float64."""
        model = self._fitted()
        return model.scores(prepare_images(x, self.config), self.config)

    def score(self, x):
        """eq. (15) of each image, float64 (N,); higher = more normal."""
        return self.score_terms(x)['score']

    @property
    def threshold(self):
        """The predict.quantile quantile of the held-out normal images' scores (nan when
        predict.holdout = 0: then pass a threshold to is_novel)."""
        return self._fitted().threshold

    def is_novel(self, x, threshold=None):
        """Whether each image scores below the threshold (default: the fitted one)."""
        return below_threshold(self.score(x), self.threshold if threshold is None else threshold)

    def export(self, path):
        """Writes the fitted model as a folder that unode_jax.serving.exported.load(path) scores
        with jax and numpy alone (serving/export.py); returns path."""
        from unode_jax.serving.export import export_model
        return export_model(self._fitted(), self.config, path)
