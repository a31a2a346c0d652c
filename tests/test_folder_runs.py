"""End-to-end runs on image-folder datasets: an MVTecAD-layout sweep, a user's folder without
test images then predict, the array cache, skipped-file logs and strict mode."""
import csv
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from tests.tiny_config import tiny_config
from unode_jax.data import registry as R
from unode_jax.data.datasets import DatasetNotFoundError
from unode_jax.data.images import ImageReadError
from unode_jax.data.registry import SKIPPED_FILE, load_data
from unode_jax.evaluation import predict as predict_lib
from unode_jax.run import run
from unode_jax.runtime.errors import ConfigError
from unode_jax.validate import validate_config

FAST = {'negatives.transforms': ('rotation', 'cutout', 'mixup'), 'negatives.weights': 'uniform',
        'data.image_size': 16, 'data.resize': 20}


def _save(path, rng, *, defect=False, mode='RGB', size=(24, 30)):
    """A noisy gradient (normal) or the same with a bright square (a defect), as `mode`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    x = np.linspace(0, 160, w)[None, :, None] + rng.normal(0, 8, (h, w, 3))
    if defect:
        x[h // 3:h // 3 + 6, w // 3:w // 3 + 6] = 255
    x = np.clip(x, 0, 255).astype(np.uint8)
    if mode == 'I;16':
        Image.fromarray(x[..., 0].astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(x).convert(mode).save(path)
    return path


def _mvtec(root, categories=('bottle', 'screw'), n_train=16):
    rng = np.random.default_rng(0)
    modes = ('RGB', 'L', 'RGBA', 'I;16')
    for cat in categories:
        for i in range(n_train):
            _save(root / cat / 'train' / 'good' / f'{i:03d}.png', rng, mode=modes[i % 4],
                  size=(24 + i % 3, 30 + 2 * (i % 4)))
        for i in range(4):
            _save(root / cat / 'test' / 'good' / f'{i:03d}.png', rng)
            _save(root / cat / 'test' / 'broken' / f'{i:03d}.jpg', rng, defect=True)
    bad = root / categories[0] / 'train' / 'good' / 'truncated.png'
    bad.write_bytes(_save(bad, rng).read_bytes()[:200])
    return bad


@pytest.mark.slow
def test_mvtec_layout_sweep_caches_logs_skipped_and_strict_fails(tmp_path, capsys):
    root = tmp_path / 'mvtec'
    bad = _mvtec(root)
    config = tiny_config(**FAST, **{'data.name': 'mvtec', 'data.path': str(root),
                                    'data.normal_class': -1,
                                    'data.categories': ('bottle', 'screw')})
    summary = run(config, str(tmp_path / 'run'))
    out = capsys.readouterr().out
    assert 'prepared mvtec' in out and 'skipped 1 unreadable image' in out
    # Each category is tested on its own 4 good + 4 broken test images.
    per_class = [summary['classes'][k] for k in ('0', '1')]
    assert [r['class_name'] for r in per_class] == ['bottle', 'screw']
    assert all(r['n_test_inliers'] == 4 and r['n_test_outliers'] == 4 for r in per_class)
    # The bright square of a broken image sets it apart from every good one (1.0 measured;
    # chance 0.5, a flipped score 0).
    assert all(r['auroc'] > 0.9 for r in per_class), [r['auroc'] for r in per_class]
    with open(tmp_path / 'run' / SKIPPED_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [r['path'] for r in rows] == [str(bad.resolve())]
    assert 'truncated' in rows[0]['reason'] or 'corrupt' in rows[0]['reason']

    # The second load reads the cached arrays, skipped list included, and decodes nothing.
    ds1 = load_data(config)
    capsys.readouterr()
    ds2 = load_data(config, str(tmp_path / 'again'))
    out = capsys.readouterr().out
    assert 'read cached mvtec' in out and 'skipped 1 unreadable image' in out
    assert (tmp_path / 'again' / SKIPPED_FILE).exists()
    np.testing.assert_array_equal(ds1.x_train, ds2.x_train)
    np.testing.assert_array_equal(ds1.test_anomalous, ds2.test_anomalous)
    assert ds2.x_train.shape == (32, 16, 16, 3) and ds2.class_names == ('bottle', 'screw')

    # A new file is another cache key: rebuilt, and the new image is in.
    _save(root / 'screw' / 'train' / 'good' / 'new.png', np.random.default_rng(1))
    ds3 = load_data(config)
    assert 'prepared mvtec' in capsys.readouterr().out and len(ds3.x_train) == 33

    # strict: the unreadable file stops the run, named, before any training.
    config.data.strict = True
    with pytest.raises(ImageReadError, match='truncated.png'):
        run(config, str(tmp_path / 'strict'))
    assert not (tmp_path / 'strict' / 'class_0').exists()

    # One category by name.
    config.data.strict, config.data.categories = False, ('screw',)
    ds = load_data(config)
    assert ds.class_names == ('screw',) and len(ds.x_train) == 17


@pytest.mark.slow
def test_training_only_folder_then_predict(tmp_path, capsys):
    root = tmp_path / 'mine'
    rng = np.random.default_rng(0)
    for i in range(20):
        _save(root / 'train' / ('a' if i % 2 else 'b') / f'{i}.png', rng,
              size=(20 + i, 40 - i))
    # A file name that is not UTF-8 (any bytes but / and NUL are valid on Linux), unreadable.
    bad_name = root / 'train' / 'a' / os.fsdecode(b'bad_\xff.png')
    bad_name.write_bytes(b'not an image')
    config = tiny_config(**FAST, **{'data.name': 'folder', 'data.path': str(root),
                                    'predict.holdout': 0.2})
    workdir = tmp_path / 'run'
    assert run(config, str(workdir)) is None
    out = capsys.readouterr().out
    assert 'has no test images' in out and 'skipped 1 unreadable' in out
    # Logged with its own bytes: the CSV's path opens the file.
    with open(workdir / SKIPPED_FILE, encoding='utf-8', errors='surrogateescape') as f:
        assert [r['path'] for r in csv.DictReader(f)] == [str(bad_name)]
    bank = predict_lib.load_bank(str(workdir))
    assert bank['logits'].shape[0] == 16 and len(bank['holdout_scores']) == 4
    assert not (workdir / 'results.json').exists()
    with pytest.raises(ConfigError, match='no test images'):
        run(config, str(workdir), mode='eval')

    new = tmp_path / 'new'
    _save(new / 'normal.png', rng, size=(50, 30))
    _save(new / 'defect.jpg', rng, defect=True, mode='L', size=(16, 16))
    (new / 'empty.png').write_bytes(b'')
    odd = os.fsdecode(b'\xff\xfe.png')
    _save(new / odd, rng, size=(20, 20))
    _, counts = run(config, str(workdir), mode='predict', images=str(new))
    assert counts['novel'] + counts['normal'] == 3 and counts['error'] == 1
    with open(workdir / 'predictions.csv', encoding='utf-8', errors='surrogateescape') as f:
        rows = {os.path.basename(r['path']): r for r in csv.DictReader(f)}
    assert rows['empty.png']['error'] and not rows['normal.png']['error']
    assert rows[odd]['score'] and not rows[odd]['error']
    assert 'predictions.csv.tmp' not in os.listdir(workdir)


@pytest.mark.slow
def test_folder_with_test_split_and_custom_anomaly_dirs(tmp_path):
    root = tmp_path / 'mine'
    rng = np.random.default_rng(0)
    for i in range(16):
        _save(root / 'train' / f'{i}.png', rng)
    for i in range(3):
        _save(root / 'test' / 'normal' / f'{i}.png', rng)
        _save(root / 'test' / 'scratch' / f'{i}.png', rng, defect=True)
        _save(root / 'test' / 'dent' / f'{i}.png', rng, defect=True)
    config = tiny_config(**FAST, **{'data.name': 'folder', 'data.path': str(root)})
    with pytest.raises(ValueError, match=r"sub-folder\(s\) \['dent', 'scratch'\]"):
        run(config, str(tmp_path / 'r0'))
    config.data.anomaly_dirs = ('scratch', 'dent')
    summary = run(config, str(tmp_path / 'r1'))
    r = summary['classes']['0']
    assert (r['n_test_inliers'], r['n_test_outliers']) == (3, 6)


def test_folder_config_errors_are_one_line(tmp_path):
    config = tiny_config(**{'data.name': 'mvtec'})
    with pytest.raises(ConfigError, match='--config.data.path=DIR'):
        validate_config(config)
    config.data.path = str(tmp_path / 'nowhere')
    with pytest.raises(DatasetNotFoundError, match='mvtec_anomaly_detection.tar.xz') as e:
        load_data(config)
    assert '\n' not in str(e.value)
    config.data.resize = 8
    with pytest.raises(ConfigError, match='data.resize'):
        validate_config(config)
    config.data.resize, config.data.categories = None, ('bottel',)
    with pytest.raises(ConfigError, match='data.categories'):
        validate_config(config)
    config.data.categories, config.data.anomaly_dirs = (), ('normal',)
    with pytest.raises(ConfigError, match='data.anomaly_dirs'):
        validate_config(config)


def test_empty_category_fails_before_decoding(tmp_path):
    root = tmp_path / 'mvtec'
    _mvtec(root, categories=('bottle',), n_train=4)
    (root / 'cable' / 'train' / 'good').mkdir(parents=True)
    (root / 'cable' / 'test' / 'good').mkdir(parents=True)
    config = tiny_config(**FAST, **{'data.name': 'mvtec', 'data.path': str(root),
                                    'data.categories': ('bottle', 'cable')})
    with pytest.raises(ValueError, match=r'class 1 \(cable\) has no training images'):
        load_data(config)


def test_cache_can_be_turned_off(tmp_path, capsys):
    root = tmp_path / 'mvtec'
    _mvtec(root, categories=('bottle',), n_train=4)
    ds, errors = R.load_folder_dataset('mvtec', root, image_size=16, cache=False,
                                       cache_dir=tmp_path / 'cache', categories=('bottle',))
    assert 'cached' not in capsys.readouterr().out and len(errors) == 1 and len(ds.x_train) == 4
    assert not (tmp_path / 'cache').exists()  # nothing written
    R.load_folder_dataset('mvtec', root, image_size=16, cache_dir=tmp_path / 'cache',
                          categories=('bottle',))
    assert len(list((tmp_path / 'cache').glob('mvtec-*.npz'))) == 1  # and with the cache on


def test_isic_holdout_from_the_config(tmp_path):
    from tests.test_folders import TRAIN_ROWS, _isic_split
    root = tmp_path / 'isic'
    _isic_split(root, 'Training', TRAIN_ROWS)  # no test set at hand
    config = tiny_config(**FAST, **{'data.name': 'isic2018', 'data.path': str(root)})
    with pytest.raises(DatasetNotFoundError, match='--config.data.isic_holdout'):
        load_data(config)
    config.data.isic_holdout = 0.4
    ds = load_data(config)
    assert (len(ds.x_train), len(ds.x_test), int(ds.test_anomalous.sum())) == (3, 5, 3)
    config.data.isic_holdout = 1.5
    with pytest.raises(ConfigError, match='data.isic_holdout'):
        validate_config(config)
