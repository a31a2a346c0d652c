"""Read PyTorch weights without torch: TorchScript archives, torch.save zip and legacy files.

Every pickle goes through a whitelisting unpickler (unpickler.py; the file formats are in
formats.py): only what rebuilds tensors is allowed, and TorchScript module classes
(``__torch__.*``) become inert containers, so a checkpoint can never run code. The result
is a flat ``{dotted key: np.ndarray}`` dict with the keys torch's ``state_dict()`` would
give; fp16/bf16 become float32, integers keep their dtype.

Converted weights are cached beside the source as ``<path>.safetensors``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import warnings

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from unode_jax.runtime.errors import CheckpointFormatError
from unode_jax.torch_io.formats import convert

RN50_SHA256 = 'afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762'
# Basenames that claim to be official files: their content must match.
KNOWN_SHA256 = {'RN50.pt': RN50_SHA256}
_CLIP_URL = 'https://openaipublic.azureedge.net/clip/models/{sha}/{name}'
# torch.hub's convention, used by torchvision's files: <name>-<sha256 prefix>.pth.
_HUB_HASH = re.compile(r'-([0-9a-f]{8,64})\.pth?$')

_CACHE_FORMAT = 'unode_jax.torch_weights/1'


def sha256_file(path) -> str:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def _sha_mismatch(path, got, want):
    name = os.path.basename(path)
    if KNOWN_SHA256.get(name) == want:
        url = _CLIP_URL.format(sha=want, name=name)
        return (f'{path}: sha256 {got} does not match the official {name} ({want}); the file '
                f'is truncated or not the original: delete it and download again from {url}')
    return f'{path}: sha256 {got} does not match the expected {want}'


def _content_sha256(weights):
    """sha256 of the tensors, in key order: a cache's tensors are checked against it."""
    h = hashlib.sha256()
    for k in sorted(weights):
        a = np.ascontiguousarray(weights[k])
        h.update(repr((k, a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cache_metadata(st, sha, weights):
    return {'format': _CACHE_FORMAT, 'source_size': str(st.st_size),
            'source_mtime_ns': str(st.st_mtime_ns), 'sha256': sha or '',
            'keys': json.dumps(list(weights)), 'content_sha256': _content_sha256(weights)}


def _read_cache(cache_path, st, want):
    """The cached weights if they were converted from this very file, else None: no cache,
    another file's (size, mtime or sha256), or a damaged one (what safetensors and json
    raise for a truncated or garbled file, metadata that is not ours, tensors that are not
    those written), said in a warning. Any other error (a failed read, out of memory) is
    raised as it is: the cache may be fine."""
    if not os.path.isfile(cache_path):
        return None
    try:
        with safe_open(cache_path, framework='np') as f:
            meta = f.metadata() or {}
            if any(meta.get(k) != v for k, v in (
                    ('format', _CACHE_FORMAT), ('source_size', str(st.st_size)),
                    ('source_mtime_ns', str(st.st_mtime_ns)))):
                return None
            if want and meta.get('sha256') != want:
                return None
            if 'content_sha256' not in meta:  # Written before caches were checked: redone.
                return None
            keys = json.loads(meta['keys'])
            if not isinstance(keys, list) or sorted(keys) != sorted(f.keys()):
                raise KeyError(f'keys {meta["keys"][:80]} are not the file\'s')
            weights = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, KeyError, json.JSONDecodeError) as e:
        _warn_damaged(cache_path, f'{type(e).__name__}: {e}')
        return None
    if meta.get('content_sha256') != _content_sha256(weights):
        _warn_damaged(cache_path, 'its tensors are not those it was written with')
        return None
    return weights


def _warn_damaged(cache_path, reason):
    warnings.warn(f'weight cache {cache_path} is damaged ({reason[:160]}); converting the '
                  'checkpoint again', RuntimeWarning, stacklevel=4)


_warned_dirs = set()


def _write_cache(cache_path, weights, st, sha):
    directory = os.path.dirname(os.path.abspath(cache_path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f'.{os.path.basename(cache_path)}.', suffix='.tmp', dir=directory)
        os.close(fd)
        os.chmod(tmp, stat.S_IMODE(st.st_mode) & 0o666)  # mkstemp makes it private
        save_file(weights, tmp, metadata=_cache_metadata(st, sha, weights))
        os.replace(tmp, cache_path)
        tmp = None
    except Exception as e:  # the cache is an optimisation: never fail a load over it
        if directory not in _warned_dirs:
            _warned_dirs.add(directory)
            warnings.warn(f'cannot write weight cache {cache_path} ({e}); the checkpoint will '
                          'be converted again on every load', RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load_state_dict(path, *, cache=True, expected_sha256=None) -> dict[str, np.ndarray]:
    """Weights of a torch checkpoint as ``{torch state_dict key: np.ndarray}``.

    Reads TorchScript archives (OpenAI's CLIP ``RN50.pt``) and ``torch.save`` files in the zip
    and legacy formats, refusing any pickle that asks for code (UnsafeCheckpointError). The
    sha256 is checked against ``expected_sha256`` or, for an official file name in
    KNOWN_SHA256, the official hash. With ``cache`` the result is kept in
    ``<path>.safetensors`` and reused while the source file's size and mtime are unchanged.
    """
    path = os.fspath(path)
    want = expected_sha256 or KNOWN_SHA256.get(os.path.basename(path))
    want = want.lower() if want else None
    st = os.stat(path)
    cache_path = path + '.safetensors'
    if cache:
        cached = _read_cache(cache_path, st, want)
        if cached is not None:
            return cached
    hub = _HUB_HASH.search(os.path.basename(path))
    sha = sha256_file(path) if (want or cache or hub) else None
    if want and sha != want:
        raise CheckpointFormatError(_sha_mismatch(path, sha, want))
    if hub and not sha.startswith(hub.group(1)):
        raise CheckpointFormatError(
            f'{path}: its name says (torch.hub convention) that its sha256 starts with '
            f'{hub.group(1)}, but it is {sha}: the download is truncated or altered; download '
            'it again (or rename the file if it is your own)')
    weights = convert(path)
    if cache:
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            _write_cache(cache_path, weights, st, sha)
    return weights
