"""The medical image-folder datasets of the paper: Head-CT (hemorrhage) and ISIC 2018
(skin lesions), in the layouts their publishers distribute them in (see folders.py)."""
from __future__ import annotations

import os
import pathlib

import numpy as np

from unode_jax.data.folder_common import Reader, images_in, need, read_csv, root_dir, with_anomalous
from unode_jax.data.types import Dataset

HEAD_CT_TRAIN = 75  # normal images trained on; the other normal ones are tested
HEAD_CT_URL = 'https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage'

ISIC_CLASSES = ('MEL', 'NV', 'BCC', 'AKIEC', 'BKL', 'DF', 'VASC')
ISIC_NORMAL = 'NV'
ISIC_URL = 'https://challenge.isic-archive.com/data/#2018'


def load_head_ct(root, *, image_size: int, resize: int | None = None, strict: bool = False,
                 progress: bool = False, seed: int = 0) -> tuple[Dataset, dict[str, str]]:
    """Head CT - hemorrhage (Kaggle): <root>/head_ct/NNN.png and <root>/labels.csv.

    labels.csv has columns `id` and `hemorrhage` (Kaggle's header writes
    ' hemorrhage'; either is accepted); image id i is the file i.png, digits
    zero-padded or not (000.png). The Kaggle archive nests the images as
    head_ct/head_ct/, which is accepted too.

    One class ('normal'): HEAD_CT_TRAIN = 75 normal images, drawn with
    np.random.default_rng(seed) from the normal ids in sorted order, are
    trained on; the other normal images (25 in the published file) and every
    hemorrhage image (100) form the test set, test_anomalous = hemorrhage. The
    split is made from labels.csv before reading, so unreadable files do not
    shift it. A png without a row in labels.csv is an error (its label is
    unknown); a row without a png is reported as an unreadable file.
    """
    what = 'Head-CT'
    hint = (f'download the dataset from {HEAD_CT_URL} and extract it so that '
            '<root>/head_ct/ holds 000.png ... and <root>/labels.csv exists')
    root = root_dir(root, what, hint)
    csv_path = need(root / 'labels.csv', what, hint, is_dir=False)
    image_dir = need(root / 'head_ct', what, hint, is_dir=True)
    if not images_in(image_dir, recursive=False) and (image_dir / 'head_ct').is_dir():
        image_dir = image_dir / 'head_ct'  # the Kaggle archive's doubled folder

    labels = {}
    for row in read_csv(csv_path, what, ('id', 'hemorrhage')):
        try:
            i, label = int(row['id']), int(float(row['hemorrhage']))
        except ValueError:
            raise ValueError(f'{what}: {csv_path} line {row["_line"]}: id and hemorrhage must '
                             f'be numbers, got {row["id"]!r}, {row["hemorrhage"]!r}') from None
        if label not in (0, 1) or i < 0:
            raise ValueError(f'{what}: {csv_path} line {row["_line"]}: expected id >= 0 and '
                             f'hemorrhage 0 or 1, got {row["id"]}, {row["hemorrhage"]}')
        if i in labels:
            raise ValueError(f'{what}: {csv_path} lists id {i} twice')
        labels[i] = label

    files, unlabelled = {}, []
    for path in images_in(image_dir, recursive=False):
        stem = pathlib.Path(path).stem
        if not stem.isdigit() or int(stem) not in labels:
            unlabelled.append(os.path.basename(path))
        elif int(stem) in files:
            raise ValueError(f'{what}: {files[int(stem)]} and {path} are both image {int(stem)}')
        else:
            files[int(stem)] = path
    if unlabelled:
        raise ValueError(f'{what}: {len(unlabelled)} image(s) in {image_dir} have no row in '
                         f'{csv_path}: {", ".join(unlabelled[:5])}')

    normal = np.array(sorted(i for i, h in labels.items() if h == 0), np.int64)
    hemorrhage = sorted(i for i, h in labels.items() if h == 1)
    if len(normal) <= HEAD_CT_TRAIN:
        raise ValueError(f'{what}: {csv_path} lists {len(normal)} normal images; the protocol '
                         f'trains on {HEAD_CT_TRAIN} and tests the rest, so it needs at least '
                         f'{HEAD_CT_TRAIN + 1}')
    if not hemorrhage:
        raise ValueError(f'{what}: {csv_path} lists no hemorrhage images (the anomalies)')
    perm = np.random.default_rng(seed).permutation(len(normal))
    train_ids = sorted(normal[perm[:HEAD_CT_TRAIN]].tolist())
    test_ids = sorted(normal[perm[HEAD_CT_TRAIN:]].tolist() + hemorrhage)

    def path_of(i):  # a csv row without a file reads as 'cannot read file'
        return files.get(i, str(image_dir / f'{i:03d}.png'))

    reader = Reader(what, image_size, resize, strict, progress)
    return with_anomalous(
        what, 'head_ct', reader, ('normal',),
        ([path_of(i) for i in train_ids], [0] * len(train_ids)),
        ([path_of(i) for i in test_ids], [0] * len(test_ids),
         [labels[i] == 1 for i in test_ids]))


# ---------------------------------------------------------------- ISIC 2018


def _isic_split(root: pathlib.Path, split: str, hint: str) -> tuple[list[str], list[str]]:
    """-> (image paths, class names) of ISIC2018_Task3_<split>, from its ground-truth csv."""
    what = 'ISIC2018'
    input_dir = need(root / f'ISIC2018_Task3_{split}_Input', what, hint, is_dir=True)
    csv_path = need(root / f'ISIC2018_Task3_{split}_GroundTruth'
                     / f'ISIC2018_Task3_{split}_GroundTruth.csv', what, hint, is_dir=False)
    paths, classes = [], []
    for row in read_csv(csv_path, what, ('image',) + ISIC_CLASSES):
        try:
            onehot = np.array([float(row[k]) for k in ISIC_CLASSES])
        except ValueError:
            raise ValueError(f'{what}: {csv_path} line {row["_line"]}: class columns must be '
                             'numbers') from None
        if not (np.isin(onehot, (0.0, 1.0)).all() and onehot.sum() == 1):
            raise ValueError(f'{what}: {csv_path} line {row["_line"]}: expected exactly one '
                             f'class column set to 1, got {onehot.tolist()}')
        name = row['image']
        if not name or name != os.path.basename(name):
            raise ValueError(f'{what}: {csv_path} line {row["_line"]}: bad image id {name!r}')
        # The csv is the authority: images are located from it, extra files
        # (LICENSE.txt, ATTRIBUTION.txt) in the folder are never looked at.
        paths.append(str(input_dir / f'{name}.jpg'))
        classes.append(ISIC_CLASSES[int(onehot.argmax())])
    if not paths:
        raise ValueError(f'{what}: {csv_path} lists no images')
    return paths, classes


def load_isic2018(root, *, image_size: int, resize: int | None = None, strict: bool = False,
                  progress: bool = False, holdout_fraction: float | None = None,
                  seed: int = 0) -> tuple[Dataset, dict[str, str]]:
    """ISIC 2018 task 3 (skin lesions, 7 classes): NV (nevus) normal, the other six anomalous.

    Layout: <root>/ISIC2018_Task3_Training_Input/<image>.jpg with
    <root>/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
    (one-hot columns image,MEL,NV,BCC,AKIEC,BKL,DF,VASC), and the same for Test.
    One class ('NV'), trained on the NV images of the training set (its other
    classes are not used).

    holdout_fraction=None (default, the paper's protocol): tested on the
    official test set (1,512 images, the NV ones normal); its folder and
    ground truth must be present, else DatasetNotFoundError -- the protocol
    is never switched silently.
    holdout_fraction=f in (0, 1): the test folder is not used; a seeded
    (np.random.default_rng(seed)) fraction f of the training NV images is held
    out as normal test images and every non-NV training image is an anomalous
    test image. Images, not lesions, are split (HAM10000 has several images of
    some lesions), so scores are optimistic next to the official test set.
    """
    what = 'ISIC2018'
    hint = (f'download ISIC2018_Task3_Training_Input.zip, ..._Training_GroundTruth.zip, '
            f'..._Test_Input.zip and ..._Test_GroundTruth.zip from {ISIC_URL} and extract '
            'them into <root>')
    root = root_dir(root, what, hint)
    paths, classes = _isic_split(root, 'Training', hint)
    paths, is_nv = np.array(paths), np.array(classes) == ISIC_NORMAL
    if not is_nv.any():
        raise ValueError(f'{what}: the training ground truth has no {ISIC_NORMAL} images')
    if holdout_fraction is None:
        test_hint = (hint + ' (or pass holdout_fraction, --config.data.isic_holdout=F, for '
                     'a seeded holdout of the training images)')
        train_paths = paths[is_nv].tolist()
        test_paths, test_classes = _isic_split(root, 'Test', test_hint)
        test_anomalous = [c != ISIC_NORMAL for c in test_classes]
    else:
        if (isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float))
                or not 0 < holdout_fraction < 1):
            raise ValueError(f'{what}: holdout_fraction must be None or in (0, 1), got '
                             f'{holdout_fraction!r}')
        nv = np.flatnonzero(is_nv)
        if len(nv) < 2:
            raise ValueError(f'{what}: a holdout needs at least 2 {ISIC_NORMAL} images, the '
                             f'training ground truth has {len(nv)}')
        n_hold = min(max(int(round(holdout_fraction * len(nv))), 1), len(nv) - 1)
        perm = np.random.default_rng(seed).permutation(len(nv))
        held = np.zeros(len(paths), bool)
        held[nv[perm[:n_hold]]] = True
        train_paths = paths[is_nv & ~held].tolist()
        test = held | ~is_nv
        test_paths, test_anomalous = paths[test].tolist(), (~is_nv[test]).tolist()
    reader = Reader(what, image_size, resize, strict, progress)
    return with_anomalous(what, 'isic2018', reader, (ISIC_NORMAL,),
                           (train_paths, [0] * len(train_paths)),
                           (test_paths, [0] * len(test_paths), test_anomalous))


# -------------------------------------------------------------- FGVC-Aircraft
