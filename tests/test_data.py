"""Tests for unode_jax.data: digits, .npz arrays, mocked tfds, one-class."""
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.tfds_mock import fake_prepared
from unode_jax.data import datasets as D, registry as R, tfds_loaders as T
from unode_jax.data.prepare import resize_bilinear
from unode_jax.data.splits import one_class_split


# ------------------------------------------------------------------- digits

@pytest.fixture(scope='module')
def digits():
    return R.load_dataset('digits')


def test_digits_shapes_dtype_and_range(digits):
    assert digits.x_train.shape == (1198, 32, 32, 3)  # 2/3 of 1,797
    assert digits.x_test.shape == (599, 32, 32, 3)
    for x in (digits.x_train, digits.x_test):
        assert x.dtype == np.uint8
        assert x.min() == 0 and x.max() == 255  # 0..16 stretched to full scale
        assert (x == x[..., :1]).all()  # gray: 3 equal channels
    assert digits.y_train.dtype == np.int32 and digits.y_test.dtype == np.int32
    assert digits.num_classes == 10
    assert digits.class_names == tuple('0123456789')
    assert set(digits.y_train) == set(digits.y_test) == set(range(10))


def test_digits_split_is_reproducible(digits):
    again = R.load_dataset('digits', image_size=8)  # native size: no resize
    assert np.array_equal(again.y_train, digits.y_train)
    assert np.array_equal(again.y_test, digits.y_test)
    assert again.x_train.shape == (1198, 8, 8, 3)
    assert np.array_equal(resize_bilinear(again.x_train, 32, 32),
                          digits.x_train)


@pytest.mark.parametrize('src,dst', [
    ((28, 28), (32, 32)), ((8, 8), (32, 32)), ((64, 48), (32, 32)),
    ((32, 32), (9, 13))])
def test_resize_matches_pil_bilinear(src, dst):
    x = np.random.default_rng(0).integers(0, 256, (4, *src, 3), dtype=np.uint8)
    ours = resize_bilinear(x, *dst)
    pil = np.stack([np.asarray(Image.fromarray(a).resize(dst[::-1],
                                                         Image.BILINEAR))
                    for a in x])
    assert ours.shape == (4, *dst, 3)
    # PIL rounds in fixed point, hence off by one at most.
    assert np.abs(ours.astype(int) - pil).max() <= 1


def test_unknown_name_lists_datasets():
    with pytest.raises(ValueError, match='cifar10.*svhn.*arrays'):
        R.load_dataset('imagenet')


# ------------------------------------------------------------------- arrays

def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _valid(gray=True):
    rng = np.random.default_rng(0)
    shape = (5, 10, 10) if gray else (5, 10, 10, 3)
    return dict(x_train=rng.integers(0, 256, shape, dtype=np.uint8),
                y_train=np.array([0, 1, 2, 1, 0]),
                x_test=rng.integers(0, 256, (3,) + shape[1:], dtype=np.uint8),
                y_test=np.array([4, 0, 1], dtype=np.int16))


@pytest.mark.parametrize('gray', [True, False])
def test_arrays_round_trip(tmp_path, gray):
    a = _valid(gray)
    p = _save(tmp_path / 'd.npz', **a)
    ds = R.load_dataset('arrays', path=p, image_size=10)  # native: exact copy
    for split in ('train', 'test'):
        want = a[f'x_{split}']
        want = np.repeat(want[..., None], 3, -1) if gray else want
        assert np.array_equal(getattr(ds, f'x_{split}'), want)
        assert getattr(ds, f'y_{split}').dtype == np.int32
    assert np.array_equal(ds.y_train, a['y_train'])
    assert np.array_equal(ds.y_test, [4, 0, 1])
    assert ds.num_classes == 5 and ds.class_names == ('0', '1', '2', '3', '4')
    ds32 = R.load_dataset('arrays', path=p)
    assert ds32.x_train.shape == (5, 32, 32, 3)
    assert ds32.x_test.dtype == np.uint8


@pytest.mark.parametrize('change,match', [
    (dict(x_train=None), r"missing key\(s\) \['x_train'\]"),
    (dict(x_train=np.zeros((5, 10, 10), np.float32)), 'x_train must be uint8'),
    (dict(x_test=np.zeros((3, 10, 10, 2), np.uint8)), '1 or 3 channels'),
    (dict(y_train=np.array([0, 1, 2])), '5 images but y_train has 3'),
    (dict(y_test=np.array([0, -1, 1])), 'negative labels'),
    (dict(y_test=np.array([0.0, 1.0, 1.0])), 'integer array'),
])
def test_arrays_validation(tmp_path, change, match):
    a = {k: v for k, v in {**_valid(), **change}.items() if v is not None}
    p = _save(tmp_path / 'bad.npz', **a)
    with pytest.raises(ValueError, match=match) as err:
        R.load_dataset('arrays', path=p)
    assert '\n' not in str(err.value) and str(p) in str(err.value)


def test_arrays_missing_file_and_path(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match='nope.npz'):
        R.load_dataset('arrays', path=tmp_path / 'nope.npz')
    with pytest.raises(ValueError, match='needs path='):
        R.load_dataset('arrays')


def test_arrays_and_outliers_name_a_file_that_is_not_an_npz(tmp_path):
    """A text file (or a bare pickle) named .npz is 'not a .npz file', not 'pickled data'."""
    text = tmp_path / 'x.npz'
    text.write_text('x_train,y_train\n1,2\n')
    with pytest.raises(ValueError, match=r"x.npz: not a \.npz file .* starts with b'x_tr'"):
        R.load_dataset('arrays', path=text)
    with pytest.raises(ValueError, match=r'x.npz: not a \.npz file'):
        D.load_outliers(text, 16)
    marker = tmp_path / 'pwned'
    bare = tmp_path / 'bare.npz'
    bare.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r'bare.npz: not a \.npz file'):
        R.load_dataset('arrays', path=bare)
    assert not marker.exists()


class _Payload:
    """Unpickling this touches `marker`: proves whether pickle code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_arrays_refuses_pickle_without_running_it(tmp_path):
    marker = tmp_path / 'pwned'
    a = _valid()
    a['y_train'] = np.array([_Payload(marker)] * 5, dtype=object)
    p = _save(tmp_path / 'evil.npz', **a)
    with pytest.raises(ValueError, match='pickled object arrays, refused'):
        R.load_dataset('arrays', path=p)
    assert not marker.exists()
    # The payload is live: loading with pickles allowed would have run it.
    with np.load(p, allow_pickle=True) as z:
        z['y_train']
    assert marker.exists()


# --------------------------------------------------------------------- split

def test_one_class_split_counts(digits):
    x_normal, x_test, is_normal = one_class_split(digits, 3)
    assert len(x_normal) == (digits.y_train == 3).sum() == 122
    assert (x_test is digits.x_test) and is_normal.dtype == bool
    assert is_normal.sum() == (digits.y_test == 3).sum() == 61
    assert len(is_normal) == len(digits.x_test)


def test_one_class_split_errors(digits, tmp_path):
    for bad in (-1, 10, 2.0, True):
        with pytest.raises(ValueError, match=r'0\.\.9'):
            one_class_split(digits, bad)
    a = _valid()
    ds = R.load_dataset('arrays', path=_save(tmp_path / 'd.npz', **a))
    with pytest.raises(ValueError, match='class 3 .* no training images'):
        one_class_split(ds, 3)  # labelled only in the test split


# ---------------------------------------------------------------------- tfds

@pytest.mark.parametrize('name,tfds_name,num_classes,src_hw', [
    ('cifar10', 'cifar10', 10, 32),
    ('cifar100', 'cifar100', 20, 32),  # coarse labels by default
    ('mnist', 'mnist', 10, 28),
    ('svhn', 'svhn_cropped', 10, 32),
])
def test_tfds_mocked(tmp_path, mock_tfds, name, tfds_name, num_classes,
                     src_hw):
    fake_prepared(tmp_path, tfds_name)
    with mock_tfds(num_examples=40):
        ds = R.load_dataset(name, data_dir=tmp_path)
    assert ds.name == name
    assert ds.x_train.shape == ds.x_test.shape == (40, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.num_classes == len(ds.class_names) == num_classes
    for y in (ds.y_train, ds.y_test):
        assert 0 <= y.min() and y.max() < num_classes
    if src_hw == 28:  # gray: resized, then replicated to 3 equal channels
        assert (ds.x_train[..., 0] == ds.x_train[..., 2]).all()


def test_tfds_cifar100_fine_labels(tmp_path, mock_tfds):
    fake_prepared(tmp_path, 'cifar100')
    with mock_tfds(num_examples=300):
        ds = R.load_dataset('cifar100', data_dir=tmp_path,
                            cifar100_coarse=False)
    assert ds.num_classes == 100 and ds.y_train.max() > 19


class _LetterSource:
    """EMNIST-letters-like records: label k is stored with row k lit, because
    TFDS keeps EMNIST transposed (so upright it is column k)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def _example(self, i):
        label = i % 26 + 1
        image = np.zeros((28, 28, 1), np.uint8)
        image[label] = 255
        return {'image': image, 'label': np.int64(label)}

    def __getitems__(self, keys):
        return [self._example(i) for i in keys]


def test_tfds_emnist_letters_upright_and_zero_based(tmp_path):
    fake_prepared(tmp_path, 'emnist/letters')

    def as_data_source(builder, split, **kwargs):
        assert builder.info.full_name.startswith('emnist/letters/')
        return [_LetterSource(52) for _ in split]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        ds = R.load_dataset('emnist_letters', data_dir=tmp_path, image_size=28)
    assert ds.x_train.shape == (52, 28, 28, 3)
    assert ds.num_classes == 26 and ds.class_names[0] == 'A'
    assert np.array_equal(ds.y_train, np.arange(52) % 26)
    for img, y in zip(ds.x_test, ds.y_test):
        lit = np.flatnonzero(img[..., 0].max(axis=0))  # lit columns
        assert list(lit) == [y + 1] and (img[:, y + 1] == 255).all()


def test_tfds_out_of_range_label_fails(tmp_path, mock_tfds):
    fake_prepared(tmp_path, 'emnist/letters')
    # The code-only emnist/letters label feature has 37 classes, so random mock
    # labels include 0 and 27..36, which real letters data never has.
    with mock_tfds(num_examples=60), pytest.raises(ValueError,
                                                   match=r'expected 1\.\.26'):
        R.load_dataset('emnist_letters', data_dir=tmp_path)


@pytest.mark.parametrize('name,tfds_name', [('cifar10', 'cifar10/3.0.2'),
                                            ('emnist_letters',
                                             'emnist/letters/3.1.0')])
def test_tfds_missing_fails_fast(tmp_path, name, tfds_name, no_network):
    (tmp_path / tfds_name.rsplit('/', 1)[0] / '0.0.1').mkdir(parents=True)
    with pytest.raises(D.DatasetNotFoundError) as err:
        R.load_dataset(name, data_dir=tmp_path)
    # Fast: no download started and no connection tried (tfds would retry for minutes).
    assert no_network.downloads == [] and no_network.connections == []
    msg = str(err.value)
    assert '\n' not in msg
    assert tfds_name in msg and str(tmp_path) in msg
    assert '--config.data.download=True' in msg
    assert 'found other versions: 0.0.1' in msg


def test_tfds_download_without_tensorflow_or_internet_says_so(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(T, 'have_tensorflow', lambda: False)
    with pytest.raises(D.DatasetNotFoundError) as err:
        R.load_dataset('mnist', data_dir=tmp_path, download=True)
    assert str(err.value) == (
        f'mnist: preparing mnist/3.0.1 needs TensorFlow: pip install -r requirements-tfds.txt '
        f'(or copy a prepared mnist/3.0.1/ folder into {tmp_path})')
    assert no_network.connections == []
    # TensorFlow there but no network: one probe with a timeout of seconds, then it stops,
    # instead of tfds' retries for minutes.
    monkeypatch.setattr(T, 'have_tensorflow', lambda: True)
    monkeypatch.setattr(T, 'ONLINE_PROBE', ('192.0.2.1', 443))  # TEST-NET-1: never answers
    with pytest.raises(D.DatasetNotFoundError, match='no internet to download it') as err:
        R.load_dataset('mnist', data_dir=tmp_path, download=True)
    assert no_network.downloads == [] and '\n' not in str(err.value)
    [(address, timeout)] = no_network.connections
    assert address == ('192.0.2.1', 443) and 0 < timeout <= 5
    assert 'copy a prepared mnist/3.0.1/ folder there' in str(err.value)


def test_load_outliers(tmp_path):
    path = tmp_path / 'tiny_imagenet.npz'
    gray = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    np.savez(path, x=gray)
    x = D.load_outliers(path, 16)
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    with pytest.raises(D.DatasetNotFoundError, match='outlier file not found'):
        D.load_outliers(tmp_path / 'missing.npz', 16)
    np.savez(tmp_path / 'wrong.npz', images=gray)
    with pytest.raises(ValueError, match='needs key "x"'):
        D.load_outliers(tmp_path / 'wrong.npz', 16)
    np.savez(tmp_path / 'float.npz', x=gray.astype(np.float32))
    with pytest.raises(ValueError, match='uint8'):
        D.load_outliers(tmp_path / 'float.npz', 16)


def test_one_class_split_with_test_anomalous(digits):
    """Datasets labelled normal/anomalous per class (MVTecAD-like): class c is tested on its
    own test images only, the anomalous ones novel."""
    import dataclasses
    anomalous = np.arange(len(digits.y_test)) % 3 == 0
    ds = dataclasses.replace(digits, test_anomalous=anomalous)
    x_train, x_test, is_normal = one_class_split(ds, 4)
    mask = digits.y_test == 4
    np.testing.assert_array_equal(x_test, digits.x_test[mask])
    np.testing.assert_array_equal(is_normal, ~anomalous[mask])
    assert len(x_train) == (digits.y_train == 4).sum()
