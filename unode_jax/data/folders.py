"""Image-folder datasets in the layouts their publishers distribute them in.

Each loader reads PNG / JPEG files with `images.read_images` (one preparation
path, `images.prepare`, for train and test alike) and returns
`(Dataset, errors)`: errors is {path: reason} for unreadable files, which are
skipped; with strict=True the first unreadable file raises `ImageReadError`
instead. A missing root or expected file / folder raises
`DatasetNotFoundError` in one line saying what to put where; a class or split
without images raises ValueError naming it, before any image is decoded (and
again if skipping unreadable files emptied it).

  name            layout under root                             protocol
  'mvtec'         <category>/train/good, <category>/test/<type>  per category, test_anomalous
  'head_ct'       head_ct/NNN.png, labels.csv                    one class, seeded 75 / 25 + 100
  'isic2018'      ISIC2018_Task3_{Training,Test}_{Input,GroundTruth}  one class NV
  'fgvc_aircraft' fgvc-aircraft-2013b/data                       ten variants, one-vs-rest
  'imagenet30'    train/<class>, test/<class>                    one-vs-rest
  'folder'        train/, test/normal, test/<anomaly dir>        one class, test_anomalous

`FOLDER_DATASETS` maps these names to their loaders; `load_folder_dataset`
dispatches on the name. See each loader's docstring for its protocol.
"""
from __future__ import annotations

import csv
import os
import pathlib

import numpy as np

from unode_jax.data.types import (Dataset, DatasetNotFoundError, dataset_from_arrays,
                                  dataset_to_arrays)
from unode_jax.data.images import IMAGE_EXTENSIONS, list_images, read_images

MVTEC_CATEGORIES = ('bottle', 'cable', 'capsule', 'carpet', 'grid', 'hazelnut', 'leather',
                    'metal_nut', 'pill', 'screw', 'tile', 'toothbrush', 'transistor', 'wood',
                    'zipper')
MVTEC_URL = 'https://www.mvtec.com/company/research/datasets/mvtec-ad'

HEAD_CT_TRAIN = 75  # normal images trained on; the other normal ones are tested
HEAD_CT_URL = 'https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage'

ISIC_CLASSES = ('MEL', 'NV', 'BCC', 'AKIEC', 'BKL', 'DF', 'VASC')
ISIC_NORMAL = 'NV'
ISIC_URL = 'https://challenge.isic-archive.com/data/#2018'

# 0-based indices into variants.txt (line order): PA-28, Tornado, DHC-6, 777-200,
# BAE 146-200, CRJ-700, Model B200, ERJ 135, Falcon 2000, Metroliner -- ten
# different manufacturers, as the paper (appendix B) says the subset was drawn.
# Read 1-based, the list would hold F/A-18 and MD-90, both McDonnell Douglas.
FGVC_SUBSET = (91, 96, 59, 19, 37, 45, 90, 68, 74, 89)
# The dataset's README: every image has a 20-pixel copyright banner at the
# bottom, to be removed; it is not part of the aircraft and would let a
# detector key on the banner's text.
FGVC_BANNER = 20
FGVC_URL = 'https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/'

IMAGENET30_URL = 'https://github.com/hendrycks/ss-ood'


# -------------------------------------------------------------------- helpers


def _visible_dirs(folder: pathlib.Path) -> list[pathlib.Path]:
    """Sub-folders, sorted by name; hidden ones (.DS_Store-like, ._x) skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))


def _images_in(folder: pathlib.Path, *, recursive: bool = True) -> list[str]:
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


def _root(root, what: str, hint: str) -> pathlib.Path:
    if root is None or not os.fspath(root):
        raise ValueError(f'{what}: no root folder given; {hint}')
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f'{what}: no folder {root}; {hint}')
    return root


def _need(path: pathlib.Path, what: str, hint: str, *, is_dir: bool) -> pathlib.Path:
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DatasetNotFoundError(f'{what}: no {path}; {hint}')
    return path


def _check_classes(what: str, split: str, labels, class_names, *, after: str = '') -> None:
    """Every class has at least one `split` image, else ValueError naming the first."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    for c, n in enumerate(counts):
        if n == 0:
            raise ValueError(f'{what}: class {c} ({class_names[c]}) has no {split} '
                             f'images{after}')


def _check_test_mix(what: str, labels, anomalous, class_names, *, after: str = '') -> None:
    """Each class's test images hold normal and anomalous ones: AUROC needs both."""
    labels, anomalous = np.asarray(labels), np.asarray(anomalous, bool)
    for c, name in enumerate(class_names):
        mine = anomalous[labels == c]
        for kind, present in (('normal', (~mine).any()), ('anomalous', mine.any())):
            if not present:
                raise ValueError(f'{what}: class {c} ({name}) has no {kind} test images'
                                 f'{after}')


class _Reader:
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


def _one_vs_rest(what: str, name: str, reader: _Reader, class_names, train, test
                 ) -> tuple[Dataset, dict[str, str]]:
    """train / test: (paths, labels) -> Dataset for the usual one-vs-rest protocol."""
    _check_classes(what, 'training', train[1], class_names)
    _check_classes(what, 'test', test[1], class_names)
    x_train, y_train = reader.read('train', *train)
    x_test, y_test = reader.read('test', *test)
    _check_classes(what, 'training', y_train, class_names, after=reader.after())
    _check_classes(what, 'test', y_test, class_names, after=reader.after())
    return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                   len(class_names), tuple(class_names)), reader.errors


def _with_anomalous(what: str, name: str, reader: _Reader, class_names, train, test
                    ) -> tuple[Dataset, dict[str, str]]:
    """train: (paths, labels); test: (paths, labels, anomalous) -> Dataset with test_anomalous."""
    _check_classes(what, 'training', train[1], class_names)
    _check_test_mix(what, test[1], test[2], class_names)
    x_train, y_train = reader.read('train', *train)
    x_test, y_test, anomalous = reader.read('test', *test)
    _check_classes(what, 'training', y_train, class_names, after=reader.after())
    _check_test_mix(what, y_test, anomalous, class_names, after=reader.after())
    return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                   len(class_names), tuple(class_names),
                   test_anomalous=anomalous.astype(bool)), reader.errors


def _read_csv(path: pathlib.Path, what: str, required: tuple) -> list[dict]:
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


def load_mvtec(root, *, image_size: int, resize: int | None = None, strict: bool = False,
               progress: bool = False, categories=()) -> tuple[Dataset, dict[str, str]]:
    """MVTec AD: <root>/<category>/train/good/*.png and <root>/<category>/test/<type>/*.png.

    Class c is category c of `categories` (() -> the 15 of MVTEC_CATEGORIES):
    trained on its train/good images, tested on all its test/ images, those
    outside test/good anomalous (image-level labels; ground_truth/ masks are
    not read). Train and test get the same preparation (the authors' loader
    resizes them differently; the paper's protocol does not).
    """
    what = 'MVTecAD'
    hint = (f'download mvtec_anomaly_detection.tar.xz from {MVTEC_URL} and extract it so that '
            '<root>/<category>/train/good exists')
    root = _root(root, what, hint)
    categories = tuple(categories) or MVTEC_CATEGORIES
    for cat in categories:
        if not isinstance(cat, str) or not cat or cat != os.path.basename(cat) or cat[0] == '.':
            raise ValueError(f'{what}: categories must be folder names, got {cat!r}')
    if len(set(categories)) != len(categories):
        raise ValueError(f'{what}: categories repeat: {categories}')
    train_paths, train_labels = [], []
    test_paths, test_labels, test_anomalous = [], [], []
    for c, cat in enumerate(categories):
        train_dir = _need(root / cat / 'train' / 'good', what, hint, is_dir=True)
        test_dir = root / cat / 'test'
        _need(test_dir / 'good', what, hint.replace('train/good', 'test/good'), is_dir=True)
        paths = _images_in(train_dir)
        if not paths:
            raise ValueError(f'{what}: class {c} ({cat}) has no training images in {train_dir}')
        train_paths += paths
        train_labels += [c] * len(paths)
        for sub in _visible_dirs(test_dir):
            paths = _images_in(sub)
            test_paths += paths
            test_labels += [c] * len(paths)
            test_anomalous += [sub.name != 'good'] * len(paths)
    reader = _Reader(what, image_size, resize, strict, progress)
    return _with_anomalous(what, 'mvtec', reader, categories, (train_paths, train_labels),
                           (test_paths, test_labels, test_anomalous))


# -------------------------------------------------------------------- Head-CT


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
    root = _root(root, what, hint)
    csv_path = _need(root / 'labels.csv', what, hint, is_dir=False)
    image_dir = _need(root / 'head_ct', what, hint, is_dir=True)
    if not _images_in(image_dir, recursive=False) and (image_dir / 'head_ct').is_dir():
        image_dir = image_dir / 'head_ct'  # the Kaggle archive's doubled folder

    labels = {}
    for row in _read_csv(csv_path, what, ('id', 'hemorrhage')):
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
    for path in _images_in(image_dir, recursive=False):
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

    reader = _Reader(what, image_size, resize, strict, progress)
    return _with_anomalous(
        what, 'head_ct', reader, ('normal',),
        ([path_of(i) for i in train_ids], [0] * len(train_ids)),
        ([path_of(i) for i in test_ids], [0] * len(test_ids),
         [labels[i] == 1 for i in test_ids]))


# ---------------------------------------------------------------- ISIC 2018


def _isic_split(root: pathlib.Path, split: str, hint: str) -> tuple[list[str], list[str]]:
    """-> (image paths, class names) of ISIC2018_Task3_<split>, from its ground-truth csv."""
    what = 'ISIC2018'
    input_dir = _need(root / f'ISIC2018_Task3_{split}_Input', what, hint, is_dir=True)
    csv_path = _need(root / f'ISIC2018_Task3_{split}_GroundTruth'
                     / f'ISIC2018_Task3_{split}_GroundTruth.csv', what, hint, is_dir=False)
    paths, classes = [], []
    for row in _read_csv(csv_path, what, ('image',) + ISIC_CLASSES):
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
    root = _root(root, what, hint)
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
    reader = _Reader(what, image_size, resize, strict, progress)
    return _with_anomalous(what, 'isic2018', reader, (ISIC_NORMAL,),
                           (train_paths, [0] * len(train_paths)),
                           (test_paths, [0] * len(test_paths), test_anomalous))


# -------------------------------------------------------------- FGVC-Aircraft


def _fgvc_split(path: pathlib.Path, variants: dict) -> list[tuple[str, str]]:
    """Lines '<image id> <variant name, may hold spaces>' -> [(id, name)]."""
    pairs = []
    with open(path, encoding='utf-8') as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(' ', 1)
            if len(parts) != 2 or parts[1] not in variants:
                raise ValueError(f'FGVC-Aircraft: {path} line {line_no}: expected "<image id> '
                                 f'<a name of variants.txt>", got {line!r}')
            pairs.append((parts[0], parts[1]))
    return pairs


def load_fgvc_aircraft(root, *, image_size: int, resize: int | None = None,
                       strict: bool = False, progress: bool = False, classes=FGVC_SUBSET
                       ) -> tuple[Dataset, dict[str, str]]:
    """FGVC-Aircraft 2013b variants: `classes` (0-based line numbers of variants.txt).

    root is the archive's fgvc-aircraft-2013b/data folder (images/<id>.jpg,
    variants.txt, images_variant_trainval.txt, images_variant_test.txt);
    fgvc-aircraft-2013b/ or the folder holding it are accepted too. Class k is
    variant classes[k] (default FGVC_SUBSET, the paper's ten, in its order);
    trained on the trainval images, tested on the test images of the chosen
    variants, one-vs-rest. The bottom FGVC_BANNER = 20 rows (the copyright
    banner, which the dataset's README says to remove) are cut off every image
    before preparation.
    """
    what = 'FGVC-Aircraft'
    hint = (f'download fgvc-aircraft-2013b.tar.gz from {FGVC_URL}, extract it and pass its '
            'fgvc-aircraft-2013b/data folder (images/, variants.txt, '
            'images_variant_trainval.txt, images_variant_test.txt) as root')
    root = _root(root, what, hint)
    for candidate in (root, root / 'data', root / 'fgvc-aircraft-2013b' / 'data'):
        if (candidate / 'variants.txt').is_file():
            root = candidate
            break
    variants_path = _need(root / 'variants.txt', what, hint, is_dir=False)
    image_dir = _need(root / 'images', what, hint, is_dir=True)
    with open(variants_path, encoding='utf-8') as fh:
        names = [line.strip() for line in fh if line.strip()]
    variants = {name: i for i, name in enumerate(names)}
    classes = tuple(classes)
    if (not classes or len(set(classes)) != len(classes)
            or any(isinstance(c, bool) or not isinstance(c, (int, np.integer))
                   or not 0 <= c < len(names) for c in classes)):
        raise ValueError(f'{what}: classes must be distinct 0-based line numbers of '
                         f'{variants_path} (0..{len(names) - 1}), got {classes}')
    label_of = {int(c): k for k, c in enumerate(classes)}
    splits = {}
    for split in ('trainval', 'test'):
        split_path = _need(root / f'images_variant_{split}.txt', what, hint, is_dir=False)
        chosen = [(str(image_dir / f'{image_id}.jpg'), label_of[variants[name]])
                  for image_id, name in _fgvc_split(split_path, variants)
                  if variants[name] in label_of]
        splits[split] = ([p for p, _ in chosen], [y for _, y in chosen])
    reader = _Reader(what, image_size, resize, strict, progress,
                     pre_crop=(0, 0, FGVC_BANNER, 0))
    return _one_vs_rest(what, 'fgvc_aircraft', reader, [names[c] for c in classes],
                        splits['trainval'], splits['test'])


# --------------------------------------------------------------- ImageNet-30


def load_imagenet30(root, *, image_size: int, resize: int | None = None, strict: bool = False,
                    progress: bool = False) -> tuple[Dataset, dict[str, str]]:
    """ImageNet-30: <root>/train/<class>/... and <root>/test/<class>/..., one-vs-rest.

    Classes are the sorted sub-folder names of train/ (30 in the published
    set, any number accepted); test/ must hold the same names. Images are
    found recursively in each class folder. The archives of the dataset's
    authors unpack as one_class_train/ and one_class_test/: accepted as well.
    """
    what = 'ImageNet-30'
    hint = (f'download one_class_train.tar and one_class_test.tar (see {IMAGENET30_URL}) and '
            'extract them as <root>/train/<class>/ and <root>/test/<class>/')
    root = _root(root, what, hint)
    dirs = {}
    for split in ('train', 'test'):
        alias = root / f'one_class_{split}'
        dirs[split] = alias if not (root / split).is_dir() and alias.is_dir() else root / split
        _need(dirs[split], what, hint, is_dir=True)
    class_names = [d.name for d in _visible_dirs(dirs['train'])]
    test_names = [d.name for d in _visible_dirs(dirs['test'])]
    if not class_names:
        raise ValueError(f'{what}: {dirs["train"]} has no class folders')
    if class_names != test_names:
        raise ValueError(f'{what}: {dirs["train"]} and {dirs["test"]} must hold the same class '
                         f'folders; only in train: {sorted(set(class_names) - set(test_names))}, '
                         f'only in test: {sorted(set(test_names) - set(class_names))}')
    splits = {}
    for split, folder in dirs.items():
        paths, labels = [], []
        for c, name in enumerate(class_names):
            found = _images_in(folder / name)
            paths += found
            labels += [c] * len(found)
        splits[split] = (paths, labels)
    reader = _Reader(what, image_size, resize, strict, progress)
    return _one_vs_rest(what, 'imagenet30', reader, class_names, splits['train'],
                        splits['test'])


# ------------------------------------------------------------ a user's folder


def load_folder(root, *, image_size: int, resize: int | None = None, strict: bool = False,
                progress: bool = False, anomaly_dirs=('anomaly',)
                ) -> tuple[Dataset, dict[str, str]]:
    """A user's images: <root>/train/ normal (recursive), <root>/test/{normal,<anomaly dir>}/.

    One class ('normal'). test/normal/ holds normal test images and each
    test/<name>/ with name in anomaly_dirs anomalous ones (both searched
    recursively; a listed name without a folder is allowed as long as some
    anomalous image exists). Any other sub-folder of test/, or images lying
    directly in test/, is an error: silently dropping or guessing their label
    would change the score. Without <root>/test the dataset is training-only
    (x_test of shape (0, S, S, 3), test_anomalous empty), for prediction.
    """
    what = 'folder'
    hint = ('put the normal training images in <root>/train/ (sub-folders allowed) and, to '
            'evaluate, normal test images in <root>/test/normal/ and anomalous ones in '
            '<root>/test/anomaly/')
    root = _root(root, what, hint)
    anomaly_dirs = (anomaly_dirs,) if isinstance(anomaly_dirs, str) else tuple(anomaly_dirs)
    for name in anomaly_dirs:
        if (not isinstance(name, str) or not name or name != os.path.basename(name)
                or name == 'normal' or name[0] == '.'):
            raise ValueError(f'{what}: anomaly_dirs must be folder names other than normal, '
                             f'got {name!r}')
    train_dir = _need(root / 'train', what, hint, is_dir=True)
    train_paths = _images_in(train_dir)
    if not train_paths:
        raise ValueError(f'{what}: class 0 (normal) has no training images in {train_dir}')
    reader = _Reader(what, image_size, resize, strict, progress)
    test_dir = root / 'test'
    if not test_dir.exists():
        x_train, = reader.read('train', train_paths)
        _check_classes(what, 'training', np.zeros(len(x_train), np.int64), ('normal',),
                       after=reader.after())
        empty = np.zeros((0, image_size, image_size, 3), np.uint8)
        return Dataset('folder', x_train, np.zeros(len(x_train), np.int32), empty,
                       np.zeros(0, np.int32), 1, ('normal',),
                       test_anomalous=np.zeros(0, bool)), reader.errors
    if not test_dir.is_dir():
        raise ValueError(f'{what}: {test_dir} is not a folder; {hint}')
    loose = _images_in(test_dir, recursive=False)
    if loose:
        raise ValueError(f'{what}: {len(loose)} image(s) lie directly in {test_dir} (e.g. '
                         f'{os.path.basename(loose[0])}); move them into test/normal/ or '
                         f'test/<anomaly dir>/')
    known = ('normal',) + anomaly_dirs
    unknown = [d.name for d in _visible_dirs(test_dir) if d.name not in known]
    if unknown:
        raise ValueError(f'{what}: {test_dir} has sub-folder(s) {unknown} that are neither '
                         f'normal/ nor in anomaly_dirs {list(anomaly_dirs)}; add their names '
                         'to anomaly_dirs (config data.anomaly_dirs) to count them as '
                         'anomalous, or move them out of test/')
    test_paths, test_anomalous = [], []
    for name in known:
        found = _images_in(test_dir / name) if (test_dir / name).is_dir() else []
        test_paths += found
        test_anomalous += [name != 'normal'] * len(found)
    for kind, count, where in (
            ('normal', test_anomalous.count(False), str(test_dir / 'normal')),
            ('anomalous', test_anomalous.count(True),
             ' or '.join(str(test_dir / d) for d in anomaly_dirs))):
        if not count:
            raise ValueError(f'{what}: no {kind} test images in {where}; the AUROC needs both '
                             'kinds (or remove test/ for a training-only dataset)')
    return _with_anomalous(what, 'folder', reader, ('normal',),
                           (train_paths, [0] * len(train_paths)),
                           (test_paths, [0] * len(test_paths), test_anomalous))


# ------------------------------------------------------------------ registry

FOLDER_DATASETS = {
    'mvtec': load_mvtec,
    'head_ct': load_head_ct,
    'isic2018': load_isic2018,
    'fgvc_aircraft': load_fgvc_aircraft,
    'imagenet30': load_imagenet30,
    'folder': load_folder,
}


# Part of the folder cache key: bump when a loader's output for the same files and
# arguments changes (a protocol fix, a new preparation step).
_FOLDER_CACHE_VERSION = 1


def load_folder_dataset(name: str, root, *, cache: bool = True, cache_dir=None,
                        log=print, **kwargs) -> tuple[Dataset, dict[str, str]]:
    """Loads folder dataset `name` (a key of FOLDER_DATASETS) from root; kwargs go to its loader.

    Every loader takes image_size (required), resize, strict and progress;
    the dataset-specific ones are: mvtec categories; head_ct seed; isic2018
    holdout_fraction, seed; fgvc_aircraft classes; folder anomaly_dirs.

    cache=True keeps the prepared arrays (and the list of skipped files) in the
    array cache of `cache.py`, keyed by every file under root (path, size,
    mtime), the loader's arguments and _FOLDER_CACHE_VERSION: a second run
    decodes nothing, and any added, removed or touched file rebuilds.
    """
    from unode_jax.data import cache as C

    if name not in FOLDER_DATASETS:
        raise ValueError(f'unknown folder dataset {name!r}; expected one of '
                         f'{tuple(FOLDER_DATASETS)}')
    loader = FOLDER_DATASETS[name]
    if not cache:
        return loader(root, **kwargs)
    # The loader's own checks (missing root, bad arguments) run before the
    # fingerprint, so they fail as fast and as clearly as without the cache.
    root_path = pathlib.Path(os.fspath(root)).expanduser() if root else None
    if root_path is None or not root_path.is_dir():
        return loader(root, **kwargs)
    root_path = root_path.resolve()
    settings = {k: v for k, v in kwargs.items() if k != 'progress'}
    key = dict(kind='folder', version=_FOLDER_CACHE_VERSION, name=name,
               root=os.fspath(root_path),
               files=C.file_fingerprint([root_path], root=root_path),
               settings={k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in sorted(settings.items())})

    def build():
        ds, errors = loader(root_path, **kwargs)
        arrays = dataset_to_arrays(ds)
        arrays['skipped_paths'] = np.array(list(errors), dtype=np.str_)
        arrays['skipped_reasons'] = np.array(list(errors.values()), dtype=np.str_)
        return arrays

    arrays = C.cached_arrays(name, key, build, cache_dir=cache_dir, log=log)
    errors = dict(zip(arrays.pop('skipped_paths').tolist(),
                      arrays.pop('skipped_reasons').tolist()))
    return dataset_from_arrays(arrays), errors
