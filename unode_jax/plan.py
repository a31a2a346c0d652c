"""The model runs a config asks for: one per normal class (one class, or a sweep with a
folder per class), or one multi-class model (Table 3)."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from unode_jax.data.splits import multiclass_split, one_class_split
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.files import CLASS_DIR, class_dir

# data.setting: one model per normal class (Tables 1, 2), or one multi-class model whose
# labels are unused or train a (K+1)-way head (Table 3).
SETTINGS = ('one_class', 'unlabeled', 'labeled')


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One model to train and score: its folder, training images and test set."""
    directory: str
    title: str  # How the run is named on the console.
    x_train: np.ndarray  # uint8 (n, H, W, 3), the normal training images
    x_test: np.ndarray  # uint8, the test images (one-class) or the inlier test images
    is_normal: Optional[np.ndarray] = None  # one-class: which test images are normal
    normal_class: Optional[int] = None  # one-class: the class, None for multi-class
    labels: Optional[np.ndarray] = None  # labeled multi-class: x_train's labels, 0..K-1
    in_sweep: bool = False  # One of several classes, each in its own class_<c>/ folder.


def plan_runs(config, ds, workdir, classes=None):
    """The ModelRuns of config.data.setting on dataset ds, in order."""
    d = config.data
    if d.setting != 'one_class':
        x_train, labels, x_test, _ = multiclass_split(ds, d.inlier_classes)
        return [ModelRun(workdir, f'{ds.name} ({d.setting})', x_train, x_test,
                         labels=labels if d.setting == 'labeled' else None)]
    if d.normal_class >= 0:
        todo, sweep = [d.normal_class], False
    else:
        todo, sweep = (range(ds.num_classes) if classes is None else classes), True
    runs = []
    for k in todo:
        x_train, x_test, is_normal = one_class_split(ds, k)
        runs.append(ModelRun(class_dir(workdir, k) if sweep else workdir,
                             f'class {k} ({ds.class_names[k]})', x_train, x_test,
                             is_normal=is_normal, normal_class=int(k), in_sweep=sweep))
    return runs


def model_directories(config, workdir):
    """[(folder, its normal class or None)] of the models config's runs keep in workdir
    (a sweep: the workdir and each class_<c>/ there), without the dataset."""
    d = config.data
    if d.setting != 'one_class':
        return [(workdir, None)]
    if d.normal_class >= 0:
        return [(workdir, d.normal_class)]
    prefix = CLASS_DIR.format('')
    names = os.listdir(workdir) if os.path.isdir(workdir) else []
    return [(workdir, d.normal_class)] + [
        (os.path.join(workdir, n), int(n[len(prefix):])) for n in sorted(names)
        if n.startswith(prefix) and n[len(prefix):].isdigit()]


def predict_dir(config, workdir):
    """The trained model predict uses: the workdir, or class_<c>/ of a one-class sweep."""
    c = config.data.normal_class
    if config.data.setting == 'one_class' and os.path.isdir(class_dir(workdir, c)):
        return class_dir(workdir, c)
    if os.path.isdir(os.path.join(workdir, 'checkpoints')):
        return workdir
    prefix = CLASS_DIR.format('')
    trained = sorted(n for n in os.listdir(workdir) if n.startswith(prefix)) \
        if os.path.isdir(workdir) else []
    if trained:
        raise ConfigError(f'{workdir} is a class sweep: pick one model with '
                          f'--config.data.normal_class=C (trained: {", ".join(trained)})')
    raise FileNotFoundError(f'no trained model in {workdir}')
