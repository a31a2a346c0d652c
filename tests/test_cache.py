"""Tests for unode_jax.data.cache and the tfds datasets read through it."""
import os
import pathlib
import re
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.tfds_mock import fake_prepared
from unode_jax.data import cache as C, datasets as D, registry as R, tfds_loaders as T
from unode_jax.data.types import dataset_from_arrays, dataset_to_arrays


class _Builder:
    """build() for cached_arrays that counts its calls."""

    def __init__(self, seed=0):
        self.calls = 0
        self.seed = seed

    def __call__(self):
        self.calls += 1
        rng = np.random.default_rng(self.seed)
        return dict(x=rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
                    y=np.arange(6, dtype=np.int32), flag=np.arange(6) % 2 == 0,
                    title=np.str_('six images'))


def _equal(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.fixture
def logs():
    return []


def _cached(tmp_path, key, build, logs, name='toy', **kw):
    return C.cached_arrays(name, key, build, cache_dir=tmp_path / 'cache',
                           log=logs.append, **kw)


# -------------------------------------------------------------- cached_arrays

def test_hit_builds_once(tmp_path, logs):
    build = _Builder()
    key = dict(version=1, image_size=32)
    first = _cached(tmp_path, key, build, logs)
    second = _cached(tmp_path, key, build, logs)
    assert build.calls == 1
    _equal(first, second)
    _equal(first, _Builder()())  # what build() returned, unchanged
    path = C.cache_path('toy', key, tmp_path / 'cache')
    assert re.fullmatch(r'toy-[0-9a-f]{16}\.npz', path.name)
    assert os.listdir(tmp_path / 'cache') == [path.name]  # no temp file left
    assert len(logs) == 2
    assert logs[0].startswith('prepared toy in ') and str(path) in logs[0]
    assert logs[1] == f'read cached toy from {path}'


def test_key_order_does_not_matter_and_disabled_builds(tmp_path, logs):
    build = _Builder()
    _cached(tmp_path, dict(a=1, b=[1, 2]), build, logs)
    _cached(tmp_path, dict(b=[1, 2], a=1), build, logs)  # canonical JSON
    assert build.calls == 1
    _cached(tmp_path, dict(a=1, b=[1, 2]), build, logs, enabled=False)
    _cached(tmp_path, dict(a=1, b=[1, 2]), build, logs, enabled=False)
    assert build.calls == 3 and len(os.listdir(tmp_path / 'cache')) == 1


def test_changed_file_setting_or_version_rebuilds(tmp_path, logs):
    src = tmp_path / 'src'
    src.mkdir()
    data = src / 'data.bin'
    data.write_bytes(b'abcd')
    (src / 'info.json').write_text('{}')

    def key(image_size=32, version=1):
        return dict(files=C.file_fingerprint([src], root=src),
                    image_size=image_size, version=version)

    build = _Builder()
    _cached(tmp_path, key(), build, logs)
    _cached(tmp_path, key(), build, logs)
    assert build.calls == 1
    assert [f[0] for f in key()['files']] == ['data.bin', 'info.json']
    # Same size, new content and an mtime forced to differ: the mtime
    # rebuilds, even where the file system's clock is coarse.
    st = data.stat()
    data.write_bytes(b'wxyz')
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    _cached(tmp_path, key(), build, logs)
    assert build.calls == 2
    data.write_bytes(b'longer content')  # size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    _cached(tmp_path, key(), build, logs)
    assert build.calls == 3
    _cached(tmp_path, key(image_size=64), build, logs)
    assert build.calls == 4
    _cached(tmp_path, key(version=2), build, logs)
    assert build.calls == 5
    (src / 'extra.txt').write_text('new file')  # a file added to the folder
    _cached(tmp_path, key(), build, logs)
    assert build.calls == 6
    _cached(tmp_path, key(), build, logs)  # nothing changed since: a hit
    assert build.calls == 6


def test_file_fingerprint(tmp_path):
    (tmp_path / 'd' / 'sub').mkdir(parents=True)
    (tmp_path / 'd' / 'sub' / 'b').write_bytes(b'12')
    (tmp_path / 'a').write_bytes(b'123')
    fp = C.file_fingerprint([tmp_path / 'd', tmp_path / 'a'], root=tmp_path)
    assert [f[:2] for f in fp] == [('a', 3), ('d/sub/b', 2)]
    assert fp[0][2] == (tmp_path / 'a').stat().st_mtime_ns
    absolute = C.file_fingerprint(tmp_path / 'a')
    assert absolute[0][0] == (tmp_path / 'a').as_posix()


def test_stored_key_mismatch_rebuilds(tmp_path, logs):
    key, other = dict(v=1), dict(v=2)
    build = _Builder()
    _cached(tmp_path, other, _Builder(seed=1), logs)
    # A file under `key`'s name holding other arrays and `other`'s stored key,
    # as a hash collision or a hand-copied file would.
    path = C.cache_path('toy', key, tmp_path / 'cache')
    os.replace(C.cache_path('toy', other, tmp_path / 'cache'), path)
    logs.clear()
    got = _cached(tmp_path, key, build, logs)
    assert build.calls == 1
    _equal(got, _Builder()())
    assert len(logs) == 1 and 'stored key differs' in logs[0]
    assert logs[0].startswith('prepared toy in ')
    _cached(tmp_path, key, build, logs)  # the rewritten file now hits
    assert build.calls == 1 and logs[-1].startswith('read cached toy')


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'no_key', 'flip'])
def test_unreadable_cache_file_rebuilds(tmp_path, logs, damage):
    key = dict(v=1)
    build = _Builder()
    _cached(tmp_path, key, build, logs)
    path = C.cache_path('toy', key, tmp_path / 'cache')
    raw = path.read_bytes()
    if damage == 'truncate':
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == 'garbage':
        path.write_bytes(b'not a zip file at all')
    elif damage == 'no_key':
        np.savez(path, **_Builder()())
    else:  # one byte of the image data: caught by the zip CRC
        off = raw.index(bytes(_Builder()()['x'][:1].tobytes()[:16]))
        path.write_bytes(raw[:off] + bytes([raw[off] ^ 1]) + raw[off + 1:])
    logs.clear()
    got = _cached(tmp_path, key, build, logs)
    assert build.calls == 2
    _equal(got, _Builder()())
    assert len(logs) == 1 and 'replaced unreadable cache file' in logs[0]
    _cached(tmp_path, key, build, logs)
    assert build.calls == 2


class _Payload:
    """Unpickling this touches `marker`: proves whether pickle code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_no_pickle_written_or_read(tmp_path, logs):
    key = dict(v=1)
    build = _Builder()
    _cached(tmp_path, key, build, logs)
    path = C.cache_path('toy', key, tmp_path / 'cache')
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(
            ['x.npy', 'y.npy', 'flag.npy', 'title.npy', '__cache_key__.npy'])
    with np.load(path, allow_pickle=False) as npz:  # would raise on objects
        assert not any(npz[k].dtype.hasobject for k in npz.files)
        assert npz['__cache_key__'].dtype == np.uint8
        stored = npz['__cache_key__'].tobytes().decode()
    # A crafted file with the right name and stored key and a live payload.
    marker = tmp_path / 'pwned'
    np.savez(path, x=np.array([_Payload(marker)] * 2, dtype=object),
             __cache_key__=np.frombuffer(stored.encode(), np.uint8))
    logs.clear()
    got = _cached(tmp_path, key, build, logs)
    assert not marker.exists() and build.calls == 2
    _equal(got, _Builder()())
    assert len(logs) == 1 and 'replaced unreadable cache file' in logs[0]
    # The payload was live: loading it with pickles allowed runs it.
    np.savez(tmp_path / 'evil.npz',
             x=np.array([_Payload(marker)] * 2, dtype=object))
    with np.load(tmp_path / 'evil.npz', allow_pickle=True) as npz:
        npz['x']
    assert marker.exists()


def test_object_arrays_refused_at_build(tmp_path, logs):
    with pytest.raises(ValueError, match="array 'names' has dtype object"):
        _cached(tmp_path, dict(v=1), lambda: dict(names=np.array([1, 'a'], object)),
                logs)
    with pytest.raises(TypeError):  # not JSON: a caller's bug, not a miss
        _cached(tmp_path, dict(v={1, 2}), _Builder(), logs)


def test_unwritable_cache_dir_returns_built(tmp_path, logs):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip('running as root: a 0500 folder stays writable')
        build = _Builder()
        for _ in range(2):
            got = C.cached_arrays('toy', dict(v=1), build, cache_dir=locked,
                                  log=logs.append)
            _equal(got, _Builder()())
        assert build.calls == 2 and os.listdir(locked) == []
        assert len(logs) == 2 and 'not cached' in logs[0]
    finally:
        locked.chmod(0o700)


def test_cache_dir_that_cannot_exist_returns_built(tmp_path, logs):
    """Like a read-only folder, but fails for root too: a file is in the way."""
    (tmp_path / 'file').write_text('')
    build = _Builder()
    got = C.cached_arrays('toy', dict(v=1), build,
                          cache_dir=tmp_path / 'file' / 'cache', log=logs.append)
    _equal(got, _Builder()())
    assert build.calls == 1 and len(logs) == 1 and 'not cached' in logs[0]


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('UNODE_JAX_CACHE', str(tmp_path / 'env'))
    assert C.cache_path('a', {}).parent == tmp_path / 'env'
    monkeypatch.delenv('UNODE_JAX_CACHE')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert C.default_cache_dir() == tmp_path / 'home/.cache/unode_jax/arrays'


@pytest.mark.parametrize('anomalous', [None, np.array([True, False, True])])
def test_dataset_round_trip(tmp_path, logs, anomalous):
    rng = np.random.default_rng(0)
    ds = D.Dataset('toy', rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8),
                   np.array([0, 1, 2, 1], np.int32),
                   rng.integers(0, 256, (3, 5, 5, 3), dtype=np.uint8),
                   np.array([2, 0, 1], np.int32), 3, ('cat', 'dog', 'süß'),
                   anomalous)
    arrays = dataset_to_arrays(ds)
    for _ in range(2):  # a build, then a read from the .npz
        back = dataset_from_arrays(_cached(tmp_path, {}, lambda: arrays, logs))
        assert back.name == 'toy' and type(back.name) is str
        assert back.num_classes == 3 and type(back.num_classes) is int
        assert back.class_names == ('cat', 'dog', 'süß')
        assert all(type(c) is str for c in back.class_names)
        for f in ('x_train', 'y_train', 'x_test', 'y_test'):
            a, b = getattr(ds, f), getattr(back, f)
            assert a.dtype == b.dtype and np.array_equal(a, b)
        if anomalous is None:
            assert back.test_anomalous is None
        else:
            assert back.test_anomalous.dtype == bool
            assert np.array_equal(back.test_anomalous, anomalous)
    assert logs[-1].startswith('read cached toy')


# ----------------------------------------------------------------------- tfds

@pytest.mark.parametrize('tfds_name', [
    'cifar10', 'cifar100', 'mnist', 'fashion_mnist', 'svhn_cropped',
    'emnist/letters', 'emnist', 'cifar10_corrupted/fog_1',
    'mnist_corrupted/rotate'])
def test_tfds_full_name_matches_builder(tmp_path, tfds_name):
    want = tfds.builder(tfds_name, data_dir=tmp_path).info.full_name
    assert T.tfds_full_name(tfds_name) == want


def _no_tfds(monkeypatch):
    """Any tfds data access from here on fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError('tfds was asked for data')
    monkeypatch.setattr(T, 'prepared_builder', refuse)
    monkeypatch.setattr(tfds, 'builder', refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'as_data_source', refuse)


def test_tfds_second_read_needs_no_tfds(tmp_path, mock_tfds, monkeypatch,
                                        capsys):
    data_dir, cache_dir = tmp_path / 'tfds', tmp_path / 'cache'
    fake_prepared(data_dir, 'mnist')
    with mock_tfds(num_examples=24):
        first = R.load_dataset('mnist', data_dir=data_dir, cache_dir=cache_dir)
    assert 'prepared mnist in ' in capsys.readouterr().out
    (path,) = cache_dir.iterdir()
    _no_tfds(monkeypatch)
    # Outside the mock context, tfds could not even build this fake folder.
    again = R.load_dataset('mnist', data_dir=data_dir, cache_dir=cache_dir)
    assert capsys.readouterr().out == f'read cached mnist from {path}\n'
    assert again.x_train.shape == (24, 32, 32, 3) and again.name == 'mnist'
    for f in ('x_train', 'y_train', 'x_test', 'y_test'):
        a, b = getattr(first, f), getattr(again, f)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert (again.num_classes, again.class_names, again.test_anomalous) == (
        first.num_classes, first.class_names, None)
    # Every cache miss now needs tfds, so each of these shows one.
    with pytest.raises(AssertionError, match='tfds was asked'):
        R.load_dataset('mnist', data_dir=data_dir, cache_dir=cache_dir,
                       image_size=28)
    with pytest.raises(AssertionError, match='tfds was asked'):
        R.load_dataset('mnist', data_dir=data_dir, cache_dir=cache_dir,
                       cache=False)
    info = data_dir / T.tfds_full_name('mnist') / 'dataset_info.json'
    st = info.stat()
    info.write_text('{"re": "prepared"}')
    os.utime(info, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match='tfds was asked'):
        R.load_dataset('mnist', data_dir=data_dir, cache_dir=cache_dir)
    assert list(cache_dir.iterdir()) == [path]


def test_tfds_cache_key_separates_label_settings(tmp_path, mock_tfds):
    data_dir, cache_dir = tmp_path / 'tfds', tmp_path / 'cache'
    fake_prepared(data_dir, 'cifar100')
    with mock_tfds(num_examples=300):
        coarse = R.load_dataset('cifar100', data_dir=data_dir,
                                cache_dir=cache_dir)
        fine = R.load_dataset('cifar100', data_dir=data_dir,
                              cache_dir=cache_dir, cifar100_coarse=False)
    assert (coarse.num_classes, fine.num_classes) == (20, 100)
    assert len(list(cache_dir.iterdir())) == 2
    again = R.load_dataset('cifar100', data_dir=data_dir, cache_dir=cache_dir,
                           cifar100_coarse=False)
    assert again.num_classes == 100 and len(again.class_names) == 100
    assert np.array_equal(again.y_train, fine.y_train)


def test_tfds_missing_fails_fast_before_cache(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match='cifar10/3.0.2'):
        R.load_dataset('cifar10', data_dir=tmp_path / 'tfds',
                       cache_dir=tmp_path / 'cache')
    assert not (tmp_path / 'cache').exists()
