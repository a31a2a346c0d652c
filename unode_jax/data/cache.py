"""A disk cache of prepared numpy arrays, keyed by what they were prepared from.

Reading a dataset from its source (tfds records, thousands of image files) and
resizing it takes seconds to minutes; the prepared uint8 arrays load from one
uncompressed .npz in a fraction of a second. `cached_arrays` keeps them in
`<cache_dir>/<name>-<sha256(key)[:16]>.npz`, where the key is a JSON document
naming everything the arrays depend on: the source files' fingerprint (path,
size, mtime), the preparation settings and a format version. A changed key is
another file name, so a stale cache is never read.

The cache is treated as untrusted: files are read with `allow_pickle=False`, the
full key stored inside the file must equal the expected one (a hash collision or a
hand-edited file is rebuilt, not served), and anything unreadable is rebuilt with
one logged line. Writes are atomic (a temp file in the same folder, then
os.replace), so an interrupted or concurrent run never leaves half a file under the
final name. Old entries are not deleted: remove the folder to reclaim space.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import time
import uuid
from typing import Callable

import numpy as np

# Part of every hashed key: bump when the file layout below changes.
CACHE_FORMAT = 1
# The npz member holding the key JSON (utf-8 bytes as a uint8 array, no pickle).
_KEY_MEMBER = '__cache_key__'
_ENV = 'UNODE_JAX_CACHE'


def default_cache_dir() -> pathlib.Path:
    """$UNODE_JAX_CACHE if set, else ~/.cache/unode_jax/arrays."""
    env = os.environ.get(_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path('~/.cache/unode_jax/arrays').expanduser()


def file_fingerprint(paths, root=None) -> list:
    """[(path, size, mtime_ns)] of the files in `paths`, sorted.

    Directories in `paths` are walked recursively. Paths are relative to `root`
    when given (so a key does not depend on where a folder is mounted if the
    caller keys the root separately), else as given. Size and mtime_ns together
    catch a replaced or re-prepared file without reading its content.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in map(pathlib.Path, paths):
        files.extend(sorted(f for f in p.rglob('*') if f.is_file())
                     if p.is_dir() else [p])
    out = []
    for f in files:
        st = f.stat()
        rel = f.relative_to(root) if root is not None else f
        out.append((rel.as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _canonical(key: dict) -> str:
    return json.dumps({'cache_format': CACHE_FORMAT, 'key': key},
                      sort_keys=True, separators=(',', ':'))


def cache_path(name: str, key: dict, cache_dir=None) -> pathlib.Path:
    """Where `cached_arrays(name, key)` keeps its file."""
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:16]
    # The name only makes the folder readable; keep it a plain file name.
    safe = re.sub(r'[^A-Za-z0-9._-]+', '_', name)
    base = default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
    return base.expanduser() / f'{safe}-{digest}.npz'


def _read(path: pathlib.Path, key_json: str) -> dict:
    """The arrays in `path`; raises if unreadable or stored under another key."""
    with np.load(path, allow_pickle=False) as npz:
        if _KEY_MEMBER not in npz.files:
            raise ValueError('no stored key')
        stored = npz[_KEY_MEMBER]
        if stored.dtype != np.uint8 or stored.tobytes().decode() != key_json:
            raise ValueError('stored key differs')
        # Every member is read here, inside the with: a truncated or corrupt
        # member fails now (zip CRC check), not later in the caller.
        return {k: npz[k] for k in npz.files if k != _KEY_MEMBER}


def _check(name: str, arrays) -> dict:
    if not isinstance(arrays, dict):
        raise TypeError(f'{name}: build() must return a dict of arrays, '
                        f'got {type(arrays).__name__}')
    out = {}
    for k, v in arrays.items():
        if k == _KEY_MEMBER:
            raise ValueError(f'{name}: array name {k!r} is reserved')
        v = np.asarray(v)
        # Object arrays could only be stored pickled, and the cache is read with
        # pickling refused: reject them at build time instead.
        if v.dtype.hasobject:
            raise ValueError(f'{name}: array {k!r} has dtype object; store '
                             'numeric, bool or unicode arrays')
        out[k] = v
    return out


def _write(path: pathlib.Path, key_json: str, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name in the same folder (so os.replace is atomic), opened
    # with 'xb' rather than mkstemp so the file gets the umask's permissions
    # (mkstemp's 0600 would hide a shared cache folder's files from others).
    tmp = path.parent / f'.{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp'
    try:
        with open(tmp, 'xb') as f:
            # Uncompressed: loading speed is the point, and uint8 images
            # compress poorly enough that zlib would cost more than it saves.
            np.savez(f, **arrays, **{
                _KEY_MEMBER: np.frombuffer(key_json.encode(), np.uint8)})
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_arrays(name: str, key: dict, build: Callable[[], dict], *,
                  cache_dir=None, enabled: bool = True,
                  log: Callable[[str], object] = print) -> dict:
    """The arrays `build()` returns, read from the cache when `key` matches.

    Args:
      name: readable prefix of the cache file name (and of log lines).
      key: JSON-serialisable dict of everything the arrays depend on.
      build: () -> dict of numpy arrays (numeric, bool or unicode; no objects).
      cache_dir: folder of the cache files; None -> default_cache_dir().
      enabled: False builds every time and neither reads nor writes files.
      log: called with one line on a hit and one on a build.

    Returns:
      dict of numpy arrays, the same on a hit as `build()` returned.
    """
    if not enabled:
        return _check(name, build())
    key_json = _canonical(key)  # a non-serialisable key raises TypeError here
    path = cache_path(name, key, cache_dir)
    note = ''
    if path.exists():
        try:
            arrays = _read(path, key_json)
        # Any failure to read a cache file (truncated zip, bad CRC, refused
        # pickle, foreign content) only means it must be rebuilt.
        except Exception as e:  # noqa: BLE001
            note = f' (replaced unreadable cache file: {type(e).__name__}: {e})'
        else:
            log(f'read cached {name} from {path}')
            return arrays
    start = time.perf_counter()
    arrays = _check(name, build())
    took = time.perf_counter() - start
    try:
        _write(path, key_json, arrays)
    except OSError as e:  # read-only or full disk: the arrays are still good
        log(f'prepared {name} in {took:.1f} s, not cached ({path.parent}: '
            f'{e.strerror or e})')
    else:
        log(f'prepared {name} in {took:.1f} s, cached at {path}{note}')
    return arrays
