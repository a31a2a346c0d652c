"""Tests for unode_jax.data.folders: real PNG / JPEG trees in each published layout.

Most images are flat colours whose value encodes where they came from (class,
split, id), so labels and splits can be checked through the decoded pixels.
"""
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from unode_jax.data import folders as F, folders_medical as M, registry as R
from unode_jax.data.datasets import DatasetNotFoundError
from unode_jax.data.folders_medical import ISIC_CLASSES
from unode_jax.data.images import ImageReadError, prepare, read_image
from unode_jax.data.splits import one_class_split

S = 16
_RNG = np.random.default_rng(0)


def _flat(path, value, size=(20, 24), mode='RGB', fmt=None):
    """A flat image of `value` (height, width = size) saved as mode; dirs created."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    if mode == 'L':
        im = Image.fromarray(np.full((h, w), value, np.uint8))
    elif mode == 'I;16':
        im = Image.fromarray(np.full((h, w), value * 257, np.uint16))
    elif mode == 'RGBA':
        a = np.full((h, w, 4), value, np.uint8)
        a[..., 3] = 30  # nearly transparent: dropped, not composited
        im = Image.fromarray(a, 'RGBA')
    else:
        im = Image.fromarray(np.full((h, w, 3), value, np.uint8))
    im.save(path, format=fmt, **({'quality': 95} if path.suffix == '.jpg' else {}))
    return path


def _truncated(path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _values(x):
    """The flat value of each image (its mean, rounded: JPEG moves pixels by a few)."""
    return np.rint(x.reshape(len(x), -1).mean(axis=1)).astype(int)


def _one_line(e):
    msg = str(e.value)
    assert '\n' not in msg
    return msg


# -------------------------------------------------------------------- MVTecAD


@pytest.fixture
def mvtec(tmp_path):
    root = tmp_path / 'mvtec'
    b, c = root / 'bottle', root / 'cable'
    _flat(b / 'train/good/000.png', 10)                                   # RGB 24x20
    _flat(b / 'train/good/001.png', 11, size=(30, 30), mode='L')          # gray
    _flat(b / 'train/good/002.png', 12, size=(18, 40), mode='I;16')       # 16-bit
    _flat(b / 'test/good/000.png', 20)
    _flat(b / 'test/broken_large/000.png', 30, mode='RGBA')
    _flat(b / 'test/broken_large/001.png', 31, size=(64, 48))
    _flat(b / 'test/contamination/000.png', 32)
    (b / 'ground_truth/broken_large').mkdir(parents=True)  # masks: never read
    _flat(b / 'ground_truth/broken_large/000_mask.png', 255, mode='L')
    _flat(c / 'train/good/000.png', 50)
    _flat(c / 'train/good/001.jpg', 51, size=(25, 21))
    _truncated(c / 'train/good/002.png')
    _flat(c / 'test/good/000.png', 60)
    _flat(c / 'test/bent_wire/000.png', 70)
    return root


def test_mvtec_layout(mvtec):
    ds, errors = F.load_mvtec(mvtec, image_size=S, categories=('bottle', 'cable'))
    assert ds.name == 'mvtec' and ds.num_classes == 2
    assert ds.class_names == ('bottle', 'cable')
    assert ds.x_train.shape == (5, S, S, 3) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1]
    assert _values(ds.x_train).tolist() == [10, 11, 12, 50, 51]
    # Test order: categories, then test/ sub-folders by name (broken_large, contamination, good).
    assert _values(ds.x_test).tolist() == [30, 31, 32, 20, 70, 60]
    assert ds.y_test.tolist() == [0, 0, 0, 0, 1, 1]
    assert ds.test_anomalous.dtype == bool
    assert ds.test_anomalous.tolist() == [True, True, True, False, True, False]
    assert list(errors) == [str(mvtec / 'cable/train/good/002.png')]
    assert 'truncated' in errors[str(mvtec / 'cable/train/good/002.png')]
    for gray in ds.x_train[1:3]:
        assert (gray == gray[..., :1]).all()
    # The per-category protocol of splits.py: the category's own test images only.
    x_tr, x_te, is_normal = one_class_split(ds, 1)
    assert len(x_tr) == 2 and _values(x_te).tolist() == [70, 60]
    assert is_normal.tolist() == [False, True]


def test_mvtec_strict_raises_on_the_truncated_file(mvtec):
    with pytest.raises(ImageReadError, match='truncated') as info:
        F.load_mvtec(mvtec, image_size=S, categories=('bottle', 'cable'), strict=True)
    assert info.value.path == str(mvtec / 'cable/train/good/002.png')


def test_mvtec_train_and_test_share_one_preparation(mvtec):
    src = mvtec / 'bottle/train/good/003.png'
    Image.fromarray(_RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(src)
    shutil.copy(src, mvtec / 'bottle/test/good/001.png')
    for resize in (None, 20):
        ds, _ = F.load_mvtec(mvtec, image_size=S, resize=resize, categories=('bottle',))
        with Image.open(src) as im:
            want = prepare(np.asarray(im), S, resize)
        np.testing.assert_array_equal(ds.x_train[3], want)
        np.testing.assert_array_equal(ds.x_test[4], want)  # broken x2, contamination, good x2


def test_mvtec_all_categories_names_the_missing_one(mvtec):
    assert len(F.MVTEC_CATEGORIES) == 15 and F.MVTEC_CATEGORIES[:3] == (
        'bottle', 'cable', 'capsule')
    with pytest.raises(DatasetNotFoundError) as e:
        F.load_mvtec(mvtec, image_size=S)
    msg = _one_line(e)
    assert str(mvtec / 'capsule/train/good') in msg and 'mvtec_anomaly_detection' in msg


def test_mvtec_missing_root(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        F.load_mvtec(tmp_path / 'nowhere', image_size=S)
    assert str(tmp_path / 'nowhere') in _one_line(e)


def test_mvtec_empty_class_and_missing_defects(mvtec):
    for p in (mvtec / 'cable/train/good').iterdir():
        p.unlink()
    with pytest.raises(ValueError, match=r'class 1 \(cable\) has no training images'):
        F.load_mvtec(mvtec, image_size=S, categories=('bottle', 'cable'))
    shutil.rmtree(mvtec / 'bottle/test/broken_large')
    shutil.rmtree(mvtec / 'bottle/test/contamination')
    with pytest.raises(ValueError, match=r'\(bottle\) has no anomalous test images'):
        F.load_mvtec(mvtec, image_size=S, categories=('bottle',))


def test_mvtec_class_emptied_by_unreadable_files(mvtec):
    for p in (mvtec / 'cable/train/good').iterdir():
        p.unlink()
    _truncated(mvtec / 'cable/train/good/000.png')
    with pytest.raises(ValueError, match='cable.*after skipping 1 unreadable'):
        F.load_mvtec(mvtec, image_size=S, categories=('bottle', 'cable'))


# -------------------------------------------------------------------- Head-CT


def _head_ct(root, n_normal=100, n_hemorrhage=100, header='id, hemorrhage', nested=False):
    """Kaggle layout: ids 0.. hemorrhage first; pixel value = id; some gray, some RGB."""
    image_dir = root / 'head_ct' / ('head_ct' if nested else '')
    rows = [header]
    for i in range(n_hemorrhage + n_normal):
        label = int(i < n_hemorrhage)
        rows.append(f'{i},{label}')
        _flat(image_dir / f'{i:03d}.png', i, size=(16, 16) if i % 3 else (20, 18),
              mode='L' if i % 2 else 'RGB')
    (root / 'labels.csv').write_text('\n'.join(rows) + '\n')
    return root


def test_head_ct_split(tmp_path):
    root = _head_ct(tmp_path / 'hct')
    ds, errors = M.load_head_ct(root, image_size=S)
    assert errors == {} and ds.name == 'head_ct'
    assert ds.num_classes == 1 and ds.class_names == ('normal',)
    assert ds.x_train.shape == (75, S, S, 3) and ds.x_test.shape == (125, S, S, 3)
    train_ids, test_ids = _values(ds.x_train), _values(ds.x_test)
    assert (train_ids >= 100).all() and len(set(train_ids)) == 75  # normal ids are 100..199
    assert ds.test_anomalous.tolist() == (test_ids < 100).tolist()
    assert ds.test_anomalous.sum() == 100 and (~ds.test_anomalous).sum() == 25
    assert set(train_ids) | set(test_ids[test_ids >= 100]) == set(range(100, 200))
    assert (ds.y_train == 0).all() and (ds.y_test == 0).all()
    # Seeded: the same seed, the same split; another seed, another one.
    again, _ = M.load_head_ct(root, image_size=S, seed=0)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    other, _ = M.load_head_ct(root, image_size=S, seed=1)
    assert set(_values(other.x_train)) != set(train_ids)


def test_head_ct_header_variants_nested_folder_and_more_normals(tmp_path):
    root = _head_ct(tmp_path / 'hct', n_normal=80, n_hemorrhage=3, header='id,hemorrhage',
                    nested=True)
    ds, _ = M.load_head_ct(root, image_size=S)
    assert len(ds.x_train) == 75 and len(ds.x_test) == 5 + 3
    assert ds.test_anomalous.sum() == 3


def test_head_ct_too_few_normals(tmp_path):
    root = _head_ct(tmp_path / 'hct', n_normal=75, n_hemorrhage=2)
    with pytest.raises(ValueError, match='75 normal images.*at least 76'):
        M.load_head_ct(root, image_size=S)


def test_head_ct_unlabelled_and_missing_files(tmp_path):
    root = _head_ct(tmp_path / 'hct', n_normal=78, n_hemorrhage=2)
    (root / 'head_ct' / '003.png').unlink()  # listed in labels.csv, no file
    ds, errors = M.load_head_ct(root, image_size=S)
    assert list(errors) == [str(root / 'head_ct' / '003.png')]
    assert 'cannot read file' in errors[str(root / 'head_ct' / '003.png')]
    assert len(ds.x_train) + len(ds.x_test) == 79
    _flat(root / 'head_ct' / '999.png', 1, size=(16, 16))
    with pytest.raises(ValueError, match='no row in.*999.png'):
        M.load_head_ct(root, image_size=S)


def test_head_ct_missing_files(tmp_path):
    root = tmp_path / 'hct'
    (root / 'head_ct').mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as e:
        M.load_head_ct(root, image_size=S)
    assert str(root / 'labels.csv') in _one_line(e) and 'kaggle' in str(e.value)
    (root / 'labels.csv').write_text('name,label\n')
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['id', 'hemorrhage'\]"):
        M.load_head_ct(root, image_size=S)


# ---------------------------------------------------------------- ISIC 2018


def _isic_split(root, split, rows):
    """rows: (image id, class name, pixel value); one-hot csv as the challenge's."""
    gt = root / f'ISIC2018_Task3_{split}_GroundTruth'
    gt.mkdir(parents=True)
    lines = ['image,' + ','.join(ISIC_CLASSES)]
    for image, cls, value in rows:
        onehot = ['1.0' if c == cls else '0.0' for c in ISIC_CLASSES]
        lines.append(','.join([image] + onehot))
        _flat(root / f'ISIC2018_Task3_{split}_Input' / f'{image}.jpg', value,
              size=(30, 40))
    (gt / f'ISIC2018_Task3_{split}_GroundTruth.csv').write_text('\n'.join(lines) + '\n')
    (root / f'ISIC2018_Task3_{split}_Input' / 'LICENSE.txt').write_text('not an image')


TRAIN_ROWS = [('ISIC_0000', 'NV', 10), ('ISIC_0001', 'MEL', 200), ('ISIC_0002', 'NV', 20),
              ('ISIC_0003', 'NV', 30), ('ISIC_0004', 'BCC', 210), ('ISIC_0005', 'NV', 40),
              ('ISIC_0006', 'VASC', 220), ('ISIC_0007', 'NV', 50)]
TEST_ROWS = [('ISIC_1000', 'NV', 60), ('ISIC_1001', 'DF', 230), ('ISIC_1002', 'NV', 70),
             ('ISIC_1003', 'AKIEC', 240)]


@pytest.fixture
def isic(tmp_path):
    root = tmp_path / 'isic'
    _isic_split(root, 'Training', TRAIN_ROWS)
    _isic_split(root, 'Test', TEST_ROWS)
    return root


def test_isic_official_test(isic):
    ds, errors = M.load_isic2018(isic, image_size=S, resize=20)
    assert errors == {} and ds.name == 'isic2018' and ds.class_names == ('NV',)
    assert ds.num_classes == 1
    assert _values(ds.x_train).tolist() == [10, 20, 30, 40, 50]  # NV only
    assert _values(ds.x_test).tolist() == [60, 230, 70, 240]
    assert ds.test_anomalous.tolist() == [False, True, False, True]


def test_isic_without_test_folder(isic):
    shutil.rmtree(isic / 'ISIC2018_Task3_Test_Input')
    with pytest.raises(DatasetNotFoundError) as e:
        M.load_isic2018(isic, image_size=S)
    msg = _one_line(e)
    assert str(isic / 'ISIC2018_Task3_Test_Input') in msg and 'holdout_fraction' in msg


def test_isic_seeded_holdout(isic):
    shutil.rmtree(isic / 'ISIC2018_Task3_Test_Input')
    ds, _ = M.load_isic2018(isic, image_size=S, holdout_fraction=0.4, seed=3)
    train, test = _values(ds.x_train), _values(ds.x_test)
    assert len(train) == 3 and (train < 100).all()  # 5 NV, round(0.4 * 5) = 2 held out
    assert sorted(test[~ds.test_anomalous].tolist() + train.tolist()) == [10, 20, 30, 40, 50]
    assert sorted(test[ds.test_anomalous].tolist()) == [200, 210, 220]
    again, _ = M.load_isic2018(isic, image_size=S, holdout_fraction=0.4, seed=3)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    with pytest.raises(ValueError, match='holdout_fraction'):
        M.load_isic2018(isic, image_size=S, holdout_fraction=1.0)


def test_isic_bad_ground_truth(isic):
    csv = isic / 'ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv'
    lines = csv.read_text().splitlines()
    lines[2] = 'ISIC_0001,1.0,1.0,0.0,0.0,0.0,0.0,0.0'
    csv.write_text('\n'.join(lines))
    with pytest.raises(ValueError, match='line 3: expected exactly one class'):
        M.load_isic2018(isic, image_size=S)


# -------------------------------------------------------------- FGVC-Aircraft

BANNER = (255, 0, 255)


def _variant_names():
    names = [f'Variant {i:02d}' for i in range(100)]
    names[74] = 'F/A-18'  # names hold spaces and slashes
    return names


def _fgvc_image(path, value):
    """52 x 60 JPEG: flat `value` above a 20-row magenta banner.

    The banner starts on a JPEG block boundary (row 32) and chroma is not
    subsampled, so JPEG does not bleed magenta into the picture above it.
    """
    a = np.full((32 + F.FGVC_BANNER, 60, 3), value, np.uint8)
    a[-F.FGVC_BANNER:] = BANNER
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=95, subsampling=0)


@pytest.fixture
def fgvc(tmp_path):
    data = tmp_path / 'fgvc-aircraft-2013b' / 'data'
    data.mkdir(parents=True)
    names = _variant_names()
    (data / 'variants.txt').write_text('\n'.join(names) + '\n')
    lines = {'trainval': [], 'test': []}
    image_id = 1000000
    for k, v in enumerate(F.FGVC_SUBSET + (0, 92)):  # 0 and 92: not in the subset
        for split, n in (('trainval', 2), ('test', 1)):
            for _ in range(n):
                image_id += 1
                _fgvc_image(data / 'images' / f'{image_id}.jpg', 10 + 10 * k)
                lines[split].append(f'{image_id} {names[v]}')
    for split, rows in lines.items():
        (data / f'images_variant_{split}.txt').write_text('\n'.join(rows) + '\n')
    return data


def test_fgvc_subset_order_and_banner(fgvc):
    ds, errors = F.load_fgvc_aircraft(fgvc, image_size=S)
    names = _variant_names()
    assert errors == {} and ds.name == 'fgvc_aircraft' and ds.num_classes == 10
    assert ds.class_names == tuple(names[i] for i in F.FGVC_SUBSET)
    assert ds.class_names[0] == 'Variant 91' and ds.class_names[8] == 'F/A-18'  # 0-based
    assert ds.test_anomalous is None
    assert ds.y_train.tolist() == [k for k in range(10) for _ in range(2)]
    assert ds.y_test.tolist() == list(range(10))
    want = [10 + 10 * k for k in range(10) for _ in range(2)]
    assert np.abs(_values(ds.x_train) - want).max() <= 2  # JPEG moves values a little
    for x in (ds.x_train, ds.x_test):  # no magenta left: R - G is large only in the banner
        assert (x[..., 0].astype(int) - x[..., 1]).max() < 20
    # The same file read without the banner removal does show it.
    uncut = read_image(fgvc / 'images/1000001.jpg', S)
    assert (uncut[-3:, :, 0].astype(int) - uncut[-3:, :, 1]).min() > 100
    via_registry, _ = R.load_folder_dataset('fgvc_aircraft', fgvc, image_size=S)
    np.testing.assert_array_equal(via_registry.x_train, ds.x_train)


def test_fgvc_root_forms_and_custom_classes(fgvc):
    for root in (fgvc.parent, fgvc.parent.parent):  # fgvc-aircraft-2013b/, or its parent
        ds, _ = F.load_fgvc_aircraft(root, image_size=S, classes=(0, 91), resize=20)
        assert ds.class_names == ('Variant 00', 'Variant 91')
        # The split file's order: variant 91's image (value 10) first, then variant 0's.
        assert np.abs(_values(ds.x_test) - [10, 110]).max() <= 2
        assert ds.y_test.tolist() == [1, 0]


def test_fgvc_missing_and_bad_files(fgvc):
    with pytest.raises(ValueError, match='0-based line numbers'):
        F.load_fgvc_aircraft(fgvc, image_size=S, classes=(100,))
    with open(fgvc / 'images_variant_test.txt', 'a') as fh:
        fh.write('1234567 Not A Variant\n')
    with pytest.raises(ValueError, match='line 13:.*Not A Variant'):
        F.load_fgvc_aircraft(fgvc, image_size=S)
    (fgvc / 'images_variant_test.txt').unlink()
    with pytest.raises(DatasetNotFoundError) as e:
        F.load_fgvc_aircraft(fgvc, image_size=S)
    assert str(fgvc / 'images_variant_test.txt') in _one_line(e)
    (fgvc / 'variants.txt').unlink()
    with pytest.raises(DatasetNotFoundError) as e:
        F.load_fgvc_aircraft(fgvc, image_size=S)
    assert 'fgvc-aircraft-2013b.tar.gz' in _one_line(e)


def test_fgvc_unreadable_image_is_reported(fgvc):
    bad = fgvc / 'images' / '1000002.jpg'
    bad.write_bytes(bad.read_bytes()[:200])
    ds, errors = F.load_fgvc_aircraft(fgvc, image_size=S)
    assert list(errors) == [str(bad)] and len(ds.x_train) == 19


# --------------------------------------------------------------- ImageNet-30


@pytest.fixture
def imagenet30(tmp_path):
    root = tmp_path / 'in30'
    for c, name in enumerate(('acorn', 'airliner', 'ambulance')):
        for i in range(2):
            _flat(root / 'train' / name / f'{i}.JPEG', 10 + c, size=(30 + i, 40))
        _flat(root / 'test' / name / 'nested' / '0.jpg', 100 + c, size=(40, 30))
    return root


def test_imagenet30(imagenet30):
    ds, errors = F.load_imagenet30(imagenet30, image_size=S, resize=24)
    assert errors == {} and ds.class_names == ('acorn', 'airliner', 'ambulance')
    assert ds.y_train.tolist() == [0, 0, 1, 1, 2, 2] and ds.y_test.tolist() == [0, 1, 2]
    assert _values(ds.x_test).tolist() == [100, 101, 102]
    assert ds.test_anomalous is None


def test_imagenet30_authors_folder_names(imagenet30):
    for split in ('train', 'test'):
        (imagenet30 / split).rename(imagenet30 / f'one_class_{split}')
    ds, _ = F.load_imagenet30(imagenet30, image_size=S)
    assert len(ds.x_train) == 6


def test_imagenet30_class_sets_must_match(imagenet30):
    _flat(imagenet30 / 'test' / 'banjo' / '0.png', 1)
    with pytest.raises(ValueError, match=r"only in test: \['banjo'\]"):
        F.load_imagenet30(imagenet30, image_size=S)
    shutil.rmtree(imagenet30 / 'test')
    with pytest.raises(DatasetNotFoundError) as e:
        F.load_imagenet30(imagenet30, image_size=S)
    assert str(imagenet30 / 'test') in _one_line(e)


# ------------------------------------------------------------ a user's folder


@pytest.fixture
def user(tmp_path):
    root = tmp_path / 'user'
    _flat(root / 'train' / 'a.png', 10)
    _flat(root / 'train' / 'day2' / 'b.jpg', 11, size=(50, 30))
    _flat(root / 'train' / '.hidden' / 'c.png', 99)  # hidden folders are skipped
    _flat(root / 'test' / 'normal' / 'n.png', 20)
    _flat(root / 'test' / 'anomaly' / 'x.png', 30)
    _flat(root / 'test' / 'scratch' / 'y.png', 31, mode='L')
    return root


def test_folder_layout(user):
    ds, errors = F.load_folder(user, image_size=S, anomaly_dirs=('anomaly', 'scratch'))
    assert errors == {} and ds.name == 'folder' and ds.class_names == ('normal',)
    assert _values(ds.x_train).tolist() == [10, 11]
    assert _values(ds.x_test).tolist() == [20, 30, 31]
    assert ds.test_anomalous.tolist() == [False, True, True]
    assert ds.y_test.tolist() == [0, 0, 0] and ds.y_test.dtype == np.int32


def test_folder_unknown_test_subfolder(user):
    with pytest.raises(ValueError) as e:
        F.load_folder(user, image_size=S)
    msg = _one_line(e)
    assert "['scratch']" in msg and 'anomaly_dirs' in msg


def test_folder_training_only(user):
    shutil.rmtree(user / 'test')
    ds, _ = R.load_folder_dataset('folder', user, image_size=S)
    assert ds.x_train.shape == (2, S, S, 3)
    assert ds.x_test.shape == (0, S, S, 3) and ds.x_test.dtype == np.uint8
    assert ds.y_test.shape == (0,) and ds.test_anomalous.shape == (0,)


def test_folder_errors(user, tmp_path):
    _flat(user / 'test' / 'loose.png', 1)
    with pytest.raises(ValueError, match='directly in'):
        F.load_folder(user, image_size=S, anomaly_dirs=('anomaly', 'scratch'))
    os.unlink(user / 'test' / 'loose.png')
    shutil.rmtree(user / 'test' / 'normal')
    with pytest.raises(ValueError, match='no normal test images'):
        F.load_folder(user, image_size=S, anomaly_dirs=('anomaly', 'scratch'))
    with pytest.raises(DatasetNotFoundError) as e:
        F.load_folder(tmp_path, image_size=S)
    assert str(tmp_path / 'train') in _one_line(e)
    with pytest.raises(ValueError, match='unknown folder dataset'):
        R.load_folder_dataset('nope', user, image_size=S)
    assert set(R.names('folder')) == {'mvtec', 'head_ct', 'isic2018', 'fgvc_aircraft',
                                      'imagenet30', 'folder'}
    with pytest.raises(ValueError, match='unknown folder dataset'):
        R.load_folder_dataset('digits', user, image_size=S)  # a name, but not a folder's
