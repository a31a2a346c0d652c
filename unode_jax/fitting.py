"""Training, one path for both doors: the command line's training modes (run.py) and the
Python API's Detector.fit both call these, so that a check or a fix lands in both.

  check_pretrained(config)          a pretrained-weights file, read and checked first
  check_trained_with(config, dirs)  (trained.py) the workdir holds no model trained with
                                    other training fields or on other images
  check_data(config, groups, ...)   the config and each model's training-set size, checked
                                    before any device work
  Fitting(config, workdir, ...)     what every model of a run shares: the negatives'
                                    weights (fixed, or AutoAugOOD's per model with its
                                    embedder), the outlier-exposure images, config.json,
                                    and in a sweep one compiled step padded to the largest
                                    class; .model(run) trains (or resumes, or restores) one
"""
import jax

from unode_jax.augment import embedders
from unode_jax.augment.weights import negative_weights
from unode_jax.data.datasets import load_outliers
from unode_jax.runtime import hosts
from unode_jax.trained import save_config, train_or_restore
from unode_jax.training import train as train_lib
from unode_jax.validate import check_group_sizes, validate_config


def check_pretrained(config):
    """A pretrained-weights file the config names is read and checked before any work."""
    if config.model.pretrained:
        train_lib.check_pretrained(config, config.data.image_size)


def check_data(config, groups, *, train=True, num_classes=None,
               flag='--config.batch_size'):
    """The config against the devices (and the dataset's classes), then each model's
    [(what, number of training images)] against batch_size (validate.check_group_sizes);
    groups may be a function that lists them, called once the config is known valid (a
    class the dataset lacks is the config's error, not an index out of range)."""
    validate_config(config, num_classes=num_classes, num_devices=jax.device_count())
    check_group_sizes(config, groups() if callable(groups) else groups, train, flag)


class Fitting:
    """The inputs every model of one run shares, made once; model(run) for each run.

    train: config.json is written to workdir and AutoAugOOD's embedder is made (process 0
    runs AutoAugOOD) before the first model; n_pad (a sweep of several classes): every
    class is padded to n_pad images so that one compiled step trains them all."""

    def __init__(self, config, workdir, *, train=True, n_pad=None):
        self.config, self.train = config, train
        self.weights = negative_weights(config)  # None: AutoAugOOD's, per model.
        self.embedder = self.outliers = None
        self.shared = {}
        if train:
            save_config(config, workdir)  # The config the models are trained with.
            if self.weights is None and hosts.is_writer():
                self.embedder = embedders.make_embedder(config)  # A missing CLIP file: here.
            if n_pad is not None:
                self.shared = dict(n_pad=n_pad,
                                   p_train_step=train_lib.make_p_train_step(config))
        if config.negatives.outliers:
            self.outliers = load_outliers(config.negatives.outliers, config.data.image_size)

    @property
    def embedder_description(self):
        return None if self.embedder is None else self.embedder.description

    def model(self, run, train=True):
        """run's trained model (trained, resumed, or restored when train is False); in a
        training run, a sweep's class folder gets its config.json (normal_class = its own)."""
        if self.train and run.in_sweep:
            save_config(self.config, run.directory, normal_class=run.normal_class)
        return train_or_restore(self.config, run, train, weights=self.weights,
                                embedder=self.embedder, outliers=self.outliers, **self.shared)
