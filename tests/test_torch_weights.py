"""Torch-free checkpoint reader against fixtures written by torch itself.

Fixtures: tests/fixtures/make_reader_fixtures.py (needs torch) writes tests/fixtures/reader/.
"""
import os
import pickle
import shutil
import sys
import warnings
import zipfile

import numpy as np
import pytest

from tests import children
from unode_jax.runtime.errors import CheckpointFormatError, UnsafeCheckpointError
from unode_jax.torch_io import weights as tw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures', 'reader')
# Same path as in make_reader_fixtures.py: what the malicious pickles would create.
PWNED_MARKER = '/tmp/unode_jax_torch_weights_pwned'
CHECKPOINTS = ['zip_fp32', 'zip_fp16', 'legacy_fp32', 'zip_wrapped', 'traced_fp32',
               'traced_fp16', 'scripted_fp32']


@pytest.fixture(scope='module')
def expected():
    with np.load(os.path.join(FIXTURES, 'expected.npz')) as data:
        out = {}
        for name in data.files:  # insertion order = torch's state_dict order
            stem, key = name.split('/', 1)
            out.setdefault(stem, {})[key] = data[name]
        return out


def _copy(tmp_path, stem, name=None):
    dst = tmp_path / (name or f'{stem}.pt')
    shutil.copyfile(os.path.join(FIXTURES, f'{stem}.pt'), dst)
    return dst


@pytest.mark.parametrize('stem', CHECKPOINTS)
def test_matches_torch_bitwise(stem, expected):
    got = tw.load_state_dict(os.path.join(FIXTURES, f'{stem}.pt'), cache=False)
    want = expected[stem]
    assert list(got) == list(want)  # same keys, in torch's order
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert got[key].flags.c_contiguous, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert got[key].tobytes() == value.tobytes(), key  # bitwise, -0.0 and NaN included
    floats = [v.dtype for v in got.values() if v.dtype.kind == 'f']
    assert floats and set(floats) == {np.dtype(np.float32)}


def test_special_entries():
    zip32 = tw.load_state_dict(os.path.join(FIXTURES, 'zip_fp32.pt'), cache=False)
    assert zip32['idx'].dtype == np.int64 and zip32['stem.1.num_batches_tracked'] == 7
    assert zip32['extra.uint16'].dtype == np.uint16
    assert zip32['extra.mask'].dtype == np.bool_
    np.testing.assert_array_equal(zip32['extra.transposed'], zip32['fc.weight'].T)
    np.testing.assert_array_equal(zip32['extra.offset'], zip32['stem.0.weight'].ravel()[5:17])
    half = tw.load_state_dict(os.path.join(FIXTURES, 'zip_fp16.pt'), cache=False)
    assert not np.array_equal(half['fc.weight'], zip32['fc.weight'])  # really rounded to fp16
    np.testing.assert_allclose(half['fc.weight'], zip32['fc.weight'], rtol=1e-3)
    traced = tw.load_state_dict(os.path.join(FIXTURES, 'traced_fp32.pt'), cache=False)
    assert list(traced) == ['scale', 'idx', 'stem.0.weight', 'stem.1.weight', 'stem.1.bias',
                            'stem.1.running_mean', 'stem.1.running_var',
                            'stem.1.num_batches_tracked', 'blocks.0.weight', 'blocks.0.bias',
                            'blocks.1.weight', 'blocks.1.bias', 'fc.weight', 'fc.bias']


@pytest.mark.parametrize('stem', ['malicious_zip', 'malicious_legacy'])
def test_refuses_foreign_globals(stem):
    if os.path.exists(PWNED_MARKER):
        os.remove(PWNED_MARKER)
    path = os.path.join(FIXTURES, f'{stem}.pt')
    with pytest.raises(UnsafeCheckpointError, match=r"'posix\.system'") as err:
        tw.load_state_dict(path, cache=False)
    assert path in str(err.value)
    assert not os.path.exists(PWNED_MARKER)


def _zip_with_pickle(path, payload):
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/data.pkl', payload)
        zf.writestr('archive/version', '3\n')


@pytest.mark.parametrize('module,name', [('builtins', 'eval'), ('builtins', 'exec'),
                                         ('subprocess', 'Popen'), ('os', 'system'),
                                         ('torch', 'load'), ('numpy', 'load')])
def test_refuses_before_executing(tmp_path, module, name):
    marker = tmp_path / 'marker'
    # GLOBAL module name; arg; TUPLE1; REDUCE
    payload = (b'\x80\x02c' + f'{module}\n{name}\n'.encode() + b'X'
               + len(f'{marker}').to_bytes(4, 'little') + f'{marker}'.encode() + b'\x85R.')
    path = tmp_path / 'evil.pt'
    _zip_with_pickle(path, payload)
    with pytest.raises(UnsafeCheckpointError, match=f"'{module}.{name}'"):
        tw.load_state_dict(path, cache=False)
    assert not marker.exists()


def test_torchscript_classes_are_inert(tmp_path):
    # A __torch__ "class" named like a dangerous function is only a stand-in: calling it
    # fails as a format error and runs nothing.
    payload = b'\x80\x02c__torch__.os\nsystem\nX\x04\x00\x00\x00true\x85R.'
    path = tmp_path / 'evil.pt'
    _zip_with_pickle(path, payload)
    with pytest.raises(CheckpointFormatError):
        tw.load_state_dict(path, cache=False)


def test_out_of_bounds_view_is_refused(tmp_path):
    # A tensor whose size/stride reach past its storage must not read foreign memory.
    good = tmp_path / 'good.pt'
    _copy(tmp_path, 'zip_fp32', 'good.pt')
    with zipfile.ZipFile(good) as zf:
        data = zf.read('zip_fp32/data.pkl')
        records = {n: zf.read(n) for n in zf.namelist()}
    # fc.bias has 3 elements: claim 3000.
    key = data.index(b'fc.bias')
    start = data.index(b'K\x03\x85', key)  # BININT1 3, TUPLE1: its size (3,)
    bad = data[:start] + b'M\xb8\x0b\x85' + data[start + 3:]  # BININT2 3000
    records['zip_fp32/data.pkl'] = bad
    path = tmp_path / 'bad.pt'
    with zipfile.ZipFile(path, 'w') as zf:
        for name, content in records.items():
            zf.writestr(name, content)
    with pytest.raises(CheckpointFormatError, match='reaches element'):
        tw.load_state_dict(path, cache=False)


def test_truncated_storage(tmp_path):
    src = os.path.join(FIXTURES, 'zip_fp32.pt')
    path = tmp_path / 'short.pt'
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, 'w') as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data[:-4] if name == 'zip_fp32/data/0' else data)
    with pytest.raises(CheckpointFormatError, match='truncated'):
        tw.load_state_dict(path, cache=False)
    legacy = tmp_path / 'short_legacy.pt'
    legacy.write_bytes(open(os.path.join(FIXTURES, 'legacy_fp32.pt'), 'rb').read()[:-4])
    with pytest.raises(CheckpointFormatError, match=f'{legacy}: truncated'):
        tw.load_state_dict(legacy, cache=False)


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all\n', b'PK\x03\x04garbage',
                                     b'\x80\x02garbage', pickle.dumps({'a': 1}, protocol=2)])
def test_garbage_is_a_format_error(tmp_path, content):
    path = tmp_path / 'garbage.pt'
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError) as err:
        tw.load_state_dict(path)
    assert '\n' not in str(err.value)
    assert not os.path.exists(f'{path}.safetensors')


def test_sha256_mismatch_for_official_name(tmp_path):
    path = _copy(tmp_path, 'traced_fp32', 'RN50.pt')
    with pytest.raises(CheckpointFormatError) as err:
        tw.load_state_dict(path)
    msg = str(err.value)
    assert str(path) in msg and tw.sha256_file(path) in msg and tw.RN50_SHA256 in msg
    assert f'https://openaipublic.azureedge.net/clip/models/{tw.RN50_SHA256}/RN50.pt' in msg
    assert not os.path.exists(f'{path}.safetensors')


def test_expected_sha256(tmp_path):
    path = _copy(tmp_path, 'zip_fp32')
    sha = tw.sha256_file(path)
    assert len(sha) == 64
    assert 'fc.weight' in tw.load_state_dict(path, expected_sha256=sha.upper(), cache=False)
    with pytest.raises(CheckpointFormatError, match='does not match the expected'):
        tw.load_state_dict(path, expected_sha256='0' * 64, cache=False)


def test_torch_hub_hash_prefix_in_the_file_name(tmp_path):
    """torchvision's files are named <name>-<sha256 prefix>.pth (torch.hub's check_hash)."""
    sha = tw.sha256_file(os.path.join(FIXTURES, 'zip_fp32.pt'))
    good = _copy(tmp_path, 'zip_fp32', f'resnet18-{sha[:8]}.pth')
    assert 'fc.weight' in tw.load_state_dict(good, cache=False)
    bad = _copy(tmp_path, 'zip_fp32', 'wide_resnet50_2-95faca4d.pth')
    with pytest.raises(CheckpointFormatError, match='starts with 95faca4d'):
        tw.load_state_dict(bad)
    assert not os.path.exists(f'{bad}.safetensors')
    assert 'fc.weight' in tw.load_state_dict(_copy(tmp_path, 'zip_fp32', 'mine-final.pth'))


def _forbid_conversion(monkeypatch):
    def fail(path):
        raise AssertionError(f'converted {path} instead of using the cache')
    monkeypatch.setattr(tw, 'convert', fail)


def test_cache_reused_and_invalidated(tmp_path, monkeypatch, expected):
    path = _copy(tmp_path, 'traced_fp16', 'model.pt')
    first = tw.load_state_dict(path)
    cache = tmp_path / 'model.pt.safetensors'
    assert cache.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')] == []

    with monkeypatch.context() as m:
        _forbid_conversion(m)
        second = tw.load_state_dict(path)
        # The sha recorded in the cache satisfies a later explicit check.
        tw.load_state_dict(path, expected_sha256=tw.sha256_file(path))
    assert list(second) == list(first) == list(expected['traced_fp16'])
    for key in first:
        assert second[key].dtype == first[key].dtype
        assert second[key].tobytes() == first[key].tobytes()

    # New content and mtime: the cache is stale and must be rebuilt from the new file.
    shutil.copyfile(os.path.join(FIXTURES, 'zip_fp32.pt'), path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = tw.load_state_dict(path)
    assert list(third) == list(expected['zip_fp32'])
    with monkeypatch.context() as m:
        _forbid_conversion(m)
        assert list(tw.load_state_dict(path)) == list(expected['zip_fp32'])

    # Same size, one weight changed in place, newer mtime: still stale. (Legacy format: a
    # zip would fail its CRC check instead.)
    shutil.copyfile(os.path.join(FIXTURES, 'legacy_fp32.pt'), path)
    tw.load_state_dict(path)
    bias = expected['legacy_fp32']['fc.bias']
    data = path.read_bytes()
    assert data.count(bias.tobytes()) == 1
    path.write_bytes(data.replace(bias.tobytes(), (bias + 1).tobytes()))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(tw.load_state_dict(path)['fc.bias'], bias + 1)


def test_cache_ignored_for_wrong_sha(tmp_path, monkeypatch):
    path = _copy(tmp_path, 'zip_fp32')
    tw.load_state_dict(path)
    with pytest.raises(CheckpointFormatError, match='does not match'):
        tw.load_state_dict(path, expected_sha256='f' * 64)


def _flip_last_tensor_byte(data):
    return data[:-1] + bytes([data[-1] ^ 0xFF])


@pytest.mark.parametrize('damage, reason', [
    (lambda data: b'\x10\x00\x00\x00\x00\x00\x00\x00{"oops": true}  ', 'SafetensorError'),
    (lambda data: data[:len(data) // 2], 'SafetensorError'),
    (lambda data: data[:8] + b'\xff' + data[9:], 'SafetensorError'),
    (_flip_last_tensor_byte, 'its tensors are not those it was written with')],
    ids=['foreign header', 'truncated', 'garbled header', 'a flipped tensor byte'])
def test_a_damaged_cache_is_said_and_rebuilt(tmp_path, expected, damage, reason):
    path = _copy(tmp_path, 'zip_fp16')
    cache = tmp_path / 'zip_fp16.pt.safetensors'
    good = tw.load_state_dict(path)
    cache.write_bytes(damage(cache.read_bytes()))
    with pytest.warns(RuntimeWarning, match=f'weight cache .* is damaged \\({reason}'):
        got = tw.load_state_dict(path)
    assert list(got) == list(expected['zip_fp16'])
    for key in good:  # converted again: the checkpoint's values, not the damaged cache's
        assert got[key].tobytes() == good[key].tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # rewritten: read back without a word
        tw.load_state_dict(path)


@pytest.mark.parametrize('keys, reason', [(None, 'KeyError'), ('[fc.weight', 'JSONDecodeError'),
                                          ('["fc.weight"]', 'KeyError: .keys .* are not')])
def test_a_cache_whose_metadata_is_damaged_is_said_and_rebuilt(tmp_path, keys, reason):
    path = _copy(tmp_path, 'zip_fp16')
    good = tw.load_state_dict(path)
    meta = tw._cache_metadata(os.stat(path), tw.sha256_file(path), good)
    meta.pop('keys') if keys is None else meta.update(keys=keys)
    tw.save_file(good, f'{path}.safetensors', metadata=meta)
    with pytest.warns(RuntimeWarning, match=f'is damaged \\({reason}'):
        tw.load_state_dict(path)


@pytest.mark.parametrize('error', [OSError(5, 'Input/output error'), MemoryError()],
                         ids=['a failed read', 'out of memory'])
def test_an_error_that_is_not_damage_is_raised_and_the_cache_kept(tmp_path, monkeypatch,
                                                                  error):
    path = _copy(tmp_path, 'zip_fp16')
    tw.load_state_dict(path)
    cache = tmp_path / 'zip_fp16.pt.safetensors'
    before = cache.read_bytes()

    def failing(*args, **kwargs):
        raise error
    monkeypatch.setattr(tw, 'safe_open', failing)
    _forbid_conversion(monkeypatch)
    with pytest.raises(type(error)):
        tw.load_state_dict(path)
    assert cache.read_bytes() == before


def test_a_cache_written_before_content_hashes_is_converted_again(tmp_path, monkeypatch,
                                                                  expected):
    path = _copy(tmp_path, 'zip_fp16')
    good = tw.load_state_dict(path)
    cache = tmp_path / 'zip_fp16.pt.safetensors'
    meta = tw._cache_metadata(os.stat(path), tw.sha256_file(path), good)
    del meta['content_sha256']
    tw.save_file(good, str(cache), metadata=meta)  # as the earlier version wrote it
    converted = []
    real = tw.convert
    monkeypatch.setattr(tw, 'convert', lambda p: converted.append(p) or real(p))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # stale, not damaged: no warning
        assert list(tw.load_state_dict(path)) == list(expected['zip_fp16'])
    assert converted == [str(path)]


def test_unwritable_directory(tmp_path, monkeypatch, expected):
    path = _copy(tmp_path, 'legacy_fp32')
    os.chmod(tmp_path, 0o555)
    if os.geteuid() == 0:  # root ignores permissions: fail the temp-file creation instead
        def refuse(*args, **kwargs):
            raise PermissionError(13, 'Permission denied', str(tmp_path))
        monkeypatch.setattr(tw.tempfile, 'mkstemp', refuse)
    monkeypatch.setattr(tw, '_warned_dirs', set())
    try:
        with pytest.warns(RuntimeWarning, match='cannot write weight cache'):
            got = tw.load_state_dict(path)
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # warned once per directory, not every load
            again = tw.load_state_dict(path)
    finally:
        os.chmod(tmp_path, 0o755)
    assert list(got) == list(again) == list(expected['legacy_fp32'])
    assert not os.path.exists(f'{path}.safetensors')


def test_reader_does_not_import_torch():
    code = 'import sys, unode_jax.torch_io.weights; assert "torch" not in sys.modules'
    r = children.run([sys.executable, '-c', code])
    assert r.returncode == 0, r.stderr[-3000:]
