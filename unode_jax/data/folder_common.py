"""What every image-folder loader shares: listing visible folders and images, one-line
errors for a missing root or file, class checks before any decoding, the reader that
collects unreadable files, and the one-vs-rest / normal-vs-anomalous protocols."""
from __future__ import annotations

import csv
import os
import pathlib

import numpy as np

from unode_jax.data.images import IMAGE_EXTENSIONS, list_images, read_images
from unode_jax.data.types import Dataset, DatasetNotFoundError


def visible_dirs(folder: pathlib.Path) -> list[pathlib.Path]:
    """Sub-folders, sorted by name; hidden ones (.DS_Store-like, ._x) skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))


def images_in(folder: pathlib.Path, *, recursive: bool = True) -> list[str]:
    """Image files of a folder, sorted, hidden ones skipped; [] if none.

    Recursive listing is `images.list_images`, so a folder dataset sees exactly
    the files `--mode=predict --images=FOLDER` would.
    """
    if recursive:
        try:
            return list_images(folder)
        except FileNotFoundError:
            return []
    return sorted(str(p) for p in folder.iterdir()
                  if not p.name.startswith('.') and p.suffix.lower() in IMAGE_EXTENSIONS
                  and p.is_file())


def root_dir(root, what: str, hint: str) -> pathlib.Path:
    if root is None or not os.fspath(root):
        raise ValueError(f'{what}: no root folder given; {hint}')
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f'{what}: no folder {root}; {hint}')
    return root


def need(path: pathlib.Path, what: str, hint: str, *, is_dir: bool) -> pathlib.Path:
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DatasetNotFoundError(f'{what}: no {path}; {hint}')
    return path


def check_classes(what: str, split: str, labels, class_names, *, after: str = '') -> None:
    """Every class has at least one `split` image, else ValueError naming the first."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    for c, n in enumerate(counts):
        if n == 0:
            raise ValueError(f'{what}: class {c} ({class_names[c]}) has no {split} '
                             f'images{after}')


def check_test_mix(what: str, labels, anomalous, class_names, *, after: str = '') -> None:
    """Each class's test images hold normal and anomalous ones: AUROC needs both."""
    labels, anomalous = np.asarray(labels), np.asarray(anomalous, bool)
    for c, name in enumerate(class_names):
        mine = anomalous[labels == c]
        for kind, present in (('normal', (~mine).any()), ('anomalous', mine.any())):
            if not present:
                raise ValueError(f'{what}: class {c} ({name}) has no {kind} test images'
                                 f'{after}')


class Reader:
    """Decodes a split's files with the caller's preparation settings, errors pooled."""

    def __init__(self, what: str, image_size: int, resize, strict: bool, progress: bool,
                 pre_crop=None):
        self.what, self.image_size, self.resize = what, image_size, resize
        self.strict, self.progress, self.pre_crop = strict, progress, pre_crop
        self.errors: dict[str, str] = {}

    def read(self, split: str, paths, *columns):
        """-> (x, each column of per-path values kept for the readable files)."""
        x, ok, errors = read_images(paths, self.image_size, progress=self.progress,
                                    resize=self.resize, pre_crop=self.pre_crop,
                                    strict=self.strict, desc=f'{self.what} {split}')
        self.errors.update(errors)
        return (x,) + tuple(np.asarray(col)[ok] for col in columns)

    def after(self) -> str:
        return (f' (after skipping {len(self.errors)} unreadable files)'
                if self.errors else '')


def one_vs_rest(what: str, name: str, reader: Reader, class_names, train, test
                 ) -> tuple[Dataset, dict[str, str]]:
    """train / test: (paths, labels) -> Dataset for the usual one-vs-rest protocol."""
    check_classes(what, 'training', train[1], class_names)
    check_classes(what, 'test', test[1], class_names)
    x_train, y_train = reader.read('train', *train)
    x_test, y_test = reader.read('test', *test)
    check_classes(what, 'training', y_train, class_names, after=reader.after())
    check_classes(what, 'test', y_test, class_names, after=reader.after())
    return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                   len(class_names), tuple(class_names)), reader.errors


def with_anomalous(what: str, name: str, reader: Reader, class_names, train, test
                    ) -> tuple[Dataset, dict[str, str]]:
    """train: (paths, labels); test: (paths, labels, anomalous) -> Dataset with test_anomalous."""
    check_classes(what, 'training', train[1], class_names)
    check_test_mix(what, test[1], test[2], class_names)
    x_train, y_train = reader.read('train', *train)
    x_test, y_test, anomalous = reader.read('test', *test)
    check_classes(what, 'training', y_train, class_names, after=reader.after())
    check_test_mix(what, y_test, anomalous, class_names, after=reader.after())
    return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                   len(class_names), tuple(class_names),
                   test_anomalous=anomalous.astype(bool)), reader.errors


def read_csv(path: pathlib.Path, what: str, required: tuple) -> list[dict]:
    """Rows of a csv as dicts; header names stripped (Kaggle's ' hemorrhage')."""
    with open(path, newline='', encoding='utf-8-sig') as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [k for k in required if k not in header]
        if missing:
            raise ValueError(f'{what}: {path} lacks column(s) {missing}; its header is '
                             f'{header}')
        rows = []
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue  # a blank line, e.g. at the end
            if len(values) != len(header):
                raise ValueError(f'{what}: {path} line {line} has {len(values)} fields, '
                                 f'the header {len(header)}')
            rows.append({'_line': line, **{k: v.strip() for k, v in zip(header, values)}})
    return rows


# -------------------------------------------------------------------- MVTecAD
