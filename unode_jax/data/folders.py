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

registry.DATASETS maps these names to their loaders (head_ct and isic2018 are in
folders_medical.py); see each loader's docstring for its protocol.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from unode_jax.data.folder_common import (Reader, check_classes, images_in, need, one_vs_rest,
                                          root_dir, visible_dirs, with_anomalous)
from unode_jax.data.types import Dataset, dataset_from_arrays, dataset_to_arrays

MVTEC_CATEGORIES = ('bottle', 'cable', 'capsule', 'carpet', 'grid', 'hazelnut', 'leather',
                    'metal_nut', 'pill', 'screw', 'tile', 'toothbrush', 'transistor', 'wood',
                    'zipper')
MVTEC_URL = 'https://www.mvtec.com/company/research/datasets/mvtec-ad'

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
    root = root_dir(root, what, hint)
    categories = tuple(categories) or MVTEC_CATEGORIES
    for cat in categories:
        if not isinstance(cat, str) or not cat or cat != os.path.basename(cat) or cat[0] == '.':
            raise ValueError(f'{what}: categories must be folder names, got {cat!r}')
    if len(set(categories)) != len(categories):
        raise ValueError(f'{what}: categories repeat: {categories}')
    train_paths, train_labels = [], []
    test_paths, test_labels, test_anomalous = [], [], []
    for c, cat in enumerate(categories):
        train_dir = need(root / cat / 'train' / 'good', what, hint, is_dir=True)
        test_dir = root / cat / 'test'
        need(test_dir / 'good', what, hint.replace('train/good', 'test/good'), is_dir=True)
        paths = images_in(train_dir)
        if not paths:
            raise ValueError(f'{what}: class {c} ({cat}) has no training images in {train_dir}')
        train_paths += paths
        train_labels += [c] * len(paths)
        for sub in visible_dirs(test_dir):
            paths = images_in(sub)
            test_paths += paths
            test_labels += [c] * len(paths)
            test_anomalous += [sub.name != 'good'] * len(paths)
    reader = Reader(what, image_size, resize, strict, progress)
    return with_anomalous(what, 'mvtec', reader, categories, (train_paths, train_labels),
                           (test_paths, test_labels, test_anomalous))


# -------------------------------------------------------------------- Head-CT


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
    root = root_dir(root, what, hint)
    for candidate in (root, root / 'data', root / 'fgvc-aircraft-2013b' / 'data'):
        if (candidate / 'variants.txt').is_file():
            root = candidate
            break
    variants_path = need(root / 'variants.txt', what, hint, is_dir=False)
    image_dir = need(root / 'images', what, hint, is_dir=True)
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
        split_path = need(root / f'images_variant_{split}.txt', what, hint, is_dir=False)
        chosen = [(str(image_dir / f'{image_id}.jpg'), label_of[variants[name]])
                  for image_id, name in _fgvc_split(split_path, variants)
                  if variants[name] in label_of]
        splits[split] = ([p for p, _ in chosen], [y for _, y in chosen])
    reader = Reader(what, image_size, resize, strict, progress,
                     pre_crop=(0, 0, FGVC_BANNER, 0))
    return one_vs_rest(what, 'fgvc_aircraft', reader, [names[c] for c in classes],
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
    root = root_dir(root, what, hint)
    dirs = {}
    for split in ('train', 'test'):
        alias = root / f'one_class_{split}'
        dirs[split] = alias if not (root / split).is_dir() and alias.is_dir() else root / split
        need(dirs[split], what, hint, is_dir=True)
    class_names = [d.name for d in visible_dirs(dirs['train'])]
    test_names = [d.name for d in visible_dirs(dirs['test'])]
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
            found = images_in(folder / name)
            paths += found
            labels += [c] * len(found)
        splits[split] = (paths, labels)
    reader = Reader(what, image_size, resize, strict, progress)
    return one_vs_rest(what, 'imagenet30', reader, class_names, splits['train'],
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
    root = root_dir(root, what, hint)
    anomaly_dirs = (anomaly_dirs,) if isinstance(anomaly_dirs, str) else tuple(anomaly_dirs)
    for name in anomaly_dirs:
        if (not isinstance(name, str) or not name or name != os.path.basename(name)
                or name == 'normal' or name[0] == '.'):
            raise ValueError(f'{what}: anomaly_dirs must be folder names other than normal, '
                             f'got {name!r}')
    train_dir = need(root / 'train', what, hint, is_dir=True)
    train_paths = images_in(train_dir)
    if not train_paths:
        raise ValueError(f'{what}: class 0 (normal) has no training images in {train_dir}')
    reader = Reader(what, image_size, resize, strict, progress)
    test_dir = root / 'test'
    if not test_dir.exists():
        x_train, = reader.read('train', train_paths)
        check_classes(what, 'training', np.zeros(len(x_train), np.int64), ('normal',),
                       after=reader.after())
        empty = np.zeros((0, image_size, image_size, 3), np.uint8)
        return Dataset('folder', x_train, np.zeros(len(x_train), np.int32), empty,
                       np.zeros(0, np.int32), 1, ('normal',),
                       test_anomalous=np.zeros(0, bool)), reader.errors
    if not test_dir.is_dir():
        raise ValueError(f'{what}: {test_dir} is not a folder; {hint}')
    loose = images_in(test_dir, recursive=False)
    if loose:
        raise ValueError(f'{what}: {len(loose)} image(s) lie directly in {test_dir} (e.g. '
                         f'{os.path.basename(loose[0])}); move them into test/normal/ or '
                         f'test/<anomaly dir>/')
    known = ('normal',) + anomaly_dirs
    unknown = [d.name for d in visible_dirs(test_dir) if d.name not in known]
    if unknown:
        raise ValueError(f'{what}: {test_dir} has sub-folder(s) {unknown} that are neither '
                         f'normal/ nor in anomaly_dirs {list(anomaly_dirs)}; add their names '
                         'to anomaly_dirs (config data.anomaly_dirs) to count them as '
                         'anomalous, or move them out of test/')
    test_paths, test_anomalous = [], []
    for name in known:
        found = images_in(test_dir / name) if (test_dir / name).is_dir() else []
        test_paths += found
        test_anomalous += [name != 'normal'] * len(found)
    for kind, count, where in (
            ('normal', test_anomalous.count(False), str(test_dir / 'normal')),
            ('anomalous', test_anomalous.count(True),
             ' or '.join(str(test_dir / d) for d in anomaly_dirs))):
        if not count:
            raise ValueError(f'{what}: no {kind} test images in {where}; the AUROC needs both '
                             'kinds (or remove test/ for a training-only dataset)')
    return with_anomalous(what, 'folder', reader, ('normal',),
                           (train_paths, [0] * len(train_paths)),
                           (test_paths, [0] * len(test_paths), test_anomalous))


# ---------------------------------------------------------------------- cache

# Part of the folder cache key: bump when a loader's output for the same files and
# arguments changes (a protocol fix, a new preparation step).
_FOLDER_CACHE_VERSION = 1


def load_cached(name: str, loader, root, *, cache: bool = True, cache_dir=None,
                log=print, **kwargs) -> tuple[Dataset, dict[str, str]]:
    """`loader(root, **kwargs)` (one of this module's, for folder dataset `name`), through
    the array cache.

    cache=True keeps the prepared arrays (and the list of skipped files) in the
    array cache of `cache.py`, keyed by every file under root (path, size,
    mtime), the loader's arguments and _FOLDER_CACHE_VERSION: a second run
    decodes nothing, and any added, removed or touched file rebuilds.
    """
    from unode_jax.data import cache as C

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
