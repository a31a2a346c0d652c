"""MNIST-format idx folders (unode_jax/data/idx.py): written here as tiny files, read back
bit for bit through the registry, and every malformed file one line naming it."""
import gzip
import json
import os
import struct

import numpy as np
import pytest

from tests.tiny_config import tiny_config
from unode_jax.data import idx, registry as R
from unode_jax.data.types import DatasetNotFoundError
from unode_jax.run import run
from unode_jax.runtime.errors import USER_ERRORS, ConfigError, error_line
from unode_jax.validate import validate_config


def idx_bytes(a, type_byte=0x08):
    """The idx encoding of uint8 array a (a numpy restatement of the format)."""
    a = np.asarray(a, np.uint8)
    return (bytes([0, 0, type_byte, a.ndim]) + struct.pack(f'>{a.ndim}I', *a.shape)
            + a.tobytes())


def write_idx_folder(folder, n_train=40, n_test=30, size=28, gz=True, seed=0):
    """Four idx files of class-dependent images: class c is a bright bar at row 2c."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, n in (('train', n_train), ('test', n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 3] = 230
        arrays[f'x_{split}'], arrays[f'y_{split}'] = x, y.astype(np.uint8)
    for key, stem in idx.FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            with gzip.open(os.path.join(folder, stem + '.gz'), 'wb') as f:
                f.write(data)
        else:
            with open(os.path.join(folder, stem), 'wb') as f:
                f.write(data)
    return arrays


@pytest.mark.parametrize('gz', [True, False])
def test_idx_files_read_back_bit_for_bit(tmp_path, gz):
    arrays = write_idx_folder(tmp_path, gz=gz)
    for key, stem in idx.FILES.items():
        got = idx.read_idx(tmp_path / (stem + ('.gz' if gz else '')))
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


def test_fashion_mnist_from_an_idx_folder_through_the_registry(tmp_path):
    arrays = write_idx_folder(tmp_path)
    ds = R.load_dataset('fashion_mnist', path=tmp_path, image_size=28)
    assert ds.name == 'fashion_mnist' and ds.num_classes == 10
    assert ds.class_names[0] == 'T-shirt/top' and ds.class_names[9] == 'Ankle boot'
    assert ds.x_train.shape == (40, 28, 28, 3) and ds.x_test.shape == (30, 28, 28, 3)
    np.testing.assert_array_equal(ds.x_train[..., 1], arrays['x_train'])  # gray -> RGB
    np.testing.assert_array_equal(ds.y_test, arrays['y_test'])
    assert ds.y_train.dtype == np.int32 and ds.test_anomalous is None
    small = R.load_dataset('mnist', path=tmp_path, image_size=16)
    assert small.x_train.shape == (40, 16, 16, 3) and small.class_names[3] == '3'
    assert R.names_with_idx() == ('mnist', 'fashion_mnist')


@pytest.mark.slow
def test_a_run_trains_and_scores_from_an_idx_folder(tmp_path):
    write_idx_folder(tmp_path / 'fm', n_train=160, n_test=60)
    config = tiny_config(**{'data.name': 'fashion_mnist', 'data.path': str(tmp_path / 'fm'),
                            'data.normal_class': 4, 'negatives.weights': 'uniform',
                            'negatives.transforms': ('rotation', 'cutout', 'mixup')})
    validate_config(config)
    run(config, str(tmp_path / 'w'))
    with open(tmp_path / 'w' / 'results.json') as f:
        result = json.load(f)['classes']['4']
    # Class 4's bar is at rows 8-10, every other class's elsewhere: an easy split.
    assert result['n_test_inliers'] == 6 and result['n_test_outliers'] == 54
    assert result['auroc'] > 0.9, result['auroc']


def _corrupt(folder, key, data):
    path = folder / (idx.FILES[key] + '.gz')
    with gzip.open(path, 'wb') as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize('damage,words', [
    ('magic', ['not an idx file']),
    ('type', ['type 0x0d', 'expected 0x08']),
    ('truncated', ['truncated']),
    ('extra', ['extra bytes']),
    ('header', ['truncated idx header']),
    ('count', ['40 images', '39 labels']),
    ('label', ['label 12', '0..9']),
    ('shape', ['expected images (N, H, W)']),
    ('gzip', ['damaged gzip']),
])
def test_a_bad_idx_file_is_one_line_naming_it(tmp_path, damage, words):
    arrays = write_idx_folder(tmp_path)
    good = idx_bytes(arrays['x_train'])
    key = 'x_train'
    if damage == 'magic':
        data = b'\x89PNG' + good[4:]
    elif damage == 'type':
        data = idx_bytes(arrays['x_train'], type_byte=0x0d)
    elif damage == 'truncated':
        data = good[:-5]
    elif damage == 'extra':
        data = good + b'\0'
    elif damage == 'header':
        data = good[:9]
    elif damage == 'count':
        key, data = 'y_train', idx_bytes(arrays['y_train'][:-1])
    elif damage == 'label':
        y = arrays['y_train'].copy()
        y[3] = 12
        key, data = 'y_train', idx_bytes(y)
    elif damage == 'shape':
        data = idx_bytes(arrays['x_train'][:, :, :, None])
    if damage == 'gzip':
        path = str(tmp_path / (idx.FILES[key] + '.gz'))
        with open(path, 'r+b') as f:  # A gzip header, then damaged deflate data.
            f.seek(12)
            f.write(b'\xff' * 64)
    else:
        path = _corrupt(tmp_path, key, data)
    with pytest.raises(ValueError) as err:
        R.load_dataset('fashion_mnist', path=tmp_path, image_size=28)
    line = error_line(err.value)
    assert isinstance(err.value, USER_ERRORS) and '\n' not in line and 'internal' not in line
    assert path in line, line
    assert all(w in line for w in words), line


def test_missing_idx_files_name_what_to_place_where(tmp_path):
    write_idx_folder(tmp_path)
    os.remove(tmp_path / (idx.FILES['y_test'] + '.gz'))
    with pytest.raises(DatasetNotFoundError) as err:
        R.load_dataset('fashion_mnist', path=tmp_path)
    msg = str(err.value)
    assert '\n' not in msg and 't10k-labels-idx1-ubyte[.gz] not found' in msg
    assert str(tmp_path) in msg and 'train-images-idx3-ubyte' in msg
    with pytest.raises(DatasetNotFoundError, match='no such folder'):
        R.load_dataset('mnist', path=tmp_path / 'nope')


def test_data_path_is_refused_where_no_idx_folder_is_read(tmp_path):
    config = tiny_config(**{'data.name': 'cifar10', 'data.path': str(tmp_path)})
    with pytest.raises(ConfigError, match=r"data.path is not read for data.name='cifar10'.*"
                                          r'mnist, fashion_mnist'):
        validate_config(config)
    with pytest.raises(ValueError, match='not read'):
        R.load_dataset('svhn', path=tmp_path)
