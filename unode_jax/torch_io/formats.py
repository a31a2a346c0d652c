"""The files torch writes, parsed into {state_dict key: np.ndarray}: torch.save's zip
archive, the legacy (pre-1.6) pickle stream, and TorchScript archives (their module
tree flattened as torch's state_dict() would). Pickles go through unpickler.py."""
from __future__ import annotations

import os
import re
import struct
import zipfile

import numpy as np

from unode_jax.runtime.errors import CheckpointFormatError
from unode_jax.torch_io.unpickler import (LEGACY_MAGIC, LEGACY_PROTOCOL, NP_DTYPE,
                                          ScriptObject, Storage, TensorRef, materialize,
                                          unpickle)

_CLASS_RE = re.compile(r'^class ([A-Za-z_]\w*)(?:\(([\w.]+)\))?:', re.M)


def _declared(body, attr):
    m = re.search(rf'^\s+{attr} = \[([^\]]*)\]', body, re.M)
    return None if m is None else frozenset(re.findall(r'"([^"]*)"', m.group(1)))


def _script_declarations(zf, root):
    """qualname -> (parameters, buffers) for module classes, None for other classes.

    The printed TorchScript code is the only place that says which tensor attributes are
    parameters or buffers (the state_dict) and which are plain attributes.
    """
    decls = {}
    prefix = root + 'code/'
    for path in zf.namelist():
        if not (path.startswith(prefix) and path.endswith('.py')):
            continue
        module = path[len(prefix):-3].replace('/', '.')
        text = zf.read(path).decode('utf-8', 'replace')
        matches = list(_CLASS_RE.finditer(text))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            body = text[m.end():end]
            qualname = f'{module}.{m.group(1)}'
            if m.group(2) != 'Module':
                decls[qualname] = None
                continue
            decls[qualname] = (_declared(body, '__parameters__') or frozenset(),
                               _declared(body, '__buffers__'))
    return decls


def _flatten_script(obj, decls, prefix, out, active):
    """Module tree -> state_dict order: own parameters, own buffers, then submodules."""
    if id(obj) in active:
        raise CheckpointFormatError('cyclic TorchScript module tree')
    state = getattr(obj, 'state', None)
    if not isinstance(state, dict):
        return  # a custom __getstate__: not an nn.Module state
    active.add(id(obj))
    tensors = [(k, v) for k, v in state.items() if isinstance(v, TensorRef)]
    decl = decls.get(obj.qualname)
    if decl is None:  # class not found in code/: every tensor attribute counts
        ordered = tensors
    else:
        params, buffers = decl
        ordered = [(k, v) for k, v in tensors if k in params]
        ordered += [(k, v) for k, v in tensors
                    if k not in params and (buffers is None or k in buffers)]
    for key, ref in ordered:
        out[f'{prefix}{key}'] = ref
    for key, value in state.items():
        if isinstance(value, ScriptObject) and decls.get(value.qualname, ()) is not None:
            _flatten_script(value, decls, f'{prefix}{key}.', out, active)
    active.discard(id(obj))


def _flatten_tree(obj, prefix, out, active):
    if isinstance(obj, TensorRef):
        out[prefix[:-1]] = obj
        return
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return  # epoch counters, config strings and such are not weights
    if id(obj) in active:
        raise CheckpointFormatError('cyclic container in checkpoint')
    active.add(id(obj))
    for key, value in items:
        key = key.decode('utf-8') if isinstance(key, bytes) else str(key)
        _flatten_tree(value, f'{prefix}{key}.', out, active)
    active.discard(id(obj))


def _to_state_dict(obj, decls, source):
    refs = {}
    if isinstance(obj, ScriptObject):
        _flatten_script(obj, decls or {}, '', refs, set())
    else:
        if isinstance(obj, TensorRef):
            raise CheckpointFormatError(f'{source}: holds a single tensor, not a state dict')
        if isinstance(obj, dict) and not any(isinstance(v, TensorRef) for v in obj.values()):
            for wrapper in ('state_dict', 'model'):
                if isinstance(obj.get(wrapper), dict):
                    obj = obj[wrapper]
                    break
        _flatten_tree(obj, '', refs, set())
    if not refs:
        raise CheckpointFormatError(f'{source}: no tensors found')
    arrays = {}  # tensors that are the same object stay one array, like torch's tied weights
    out = {}
    for key, ref in refs.items():
        if id(ref) not in arrays:
            arrays[id(ref)] = materialize(ref, source)
        out[key] = arrays[id(ref)]
    return out


def _load_zip(path):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError) as e:
        raise CheckpointFormatError(f'{path}: corrupt zip archive ({e})') from e
    with zf:
        names = zf.namelist()
        roots = [n[:-len('data.pkl')] for n in names
                 if n.endswith('/data.pkl') and n.count('/') == 1]
        if len(roots) != 1:
            if any(n.endswith('model.json') for n in names):
                raise CheckpointFormatError(
                    f'{path}: TorchScript archive from torch < 1.4 (model.json) is not '
                    'supported; re-save it with a newer torch')
            raise CheckpointFormatError(f'{path}: zip archive without a torch data.pkl')
        root = roots[0]
        big = False
        if root + 'byteorder' in names:
            order = zf.read(root + 'byteorder')
            if order not in (b'little', b'big'):
                raise CheckpointFormatError(f'{path}: unknown byteorder {order!r}')
            big = order == b'big'
        storages = {}

        def persistent_load(args):
            if len(args) != 4:
                raise CheckpointFormatError(f'{path}: bad storage id {args!r}')
            storage_type, key, _location, numel = args
            key = str(key)
            if key not in storages:
                storages[key] = Storage(storage_type.dtype, numel)
            return storages[key]

        try:
            with zf.open(root + 'data.pkl') as f:
                obj = unpickle(f, path, persistent_load)
            for key, storage in storages.items():
                record = f'{root}data/{key}'
                if record not in names:
                    raise CheckpointFormatError(f'{path}: missing tensor data {record}')
                storage.attach(zf.read(record), big, path)
            decls = _script_declarations(zf, root) if isinstance(obj, ScriptObject) else None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointFormatError(f'{path}: corrupt zip archive ({e})') from e
    return _to_state_dict(obj, decls, path)


def _load_legacy(path, f):
    """The pre-1.6 format: pickled magic, protocol, sys info, data, storage keys, raw storages."""
    magic = unpickle(f, path)
    if magic != LEGACY_MAGIC:
        raise CheckpointFormatError(f'{path}: a pickle, but not a torch checkpoint')
    protocol = unpickle(f, path)
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointFormatError(f'{path}: unsupported legacy protocol {protocol!r}')
    unpickle(f, path)  # sys info; storages are little-endian whatever the writer's host
    storages = {}

    def persistent_load(args):
        if len(args) != 5:
            raise CheckpointFormatError(f'{path}: bad storage id {args!r}')
        storage_type, key, _location, numel, view = args
        if key not in storages:
            storages[key] = Storage(storage_type.dtype, numel)
        root = storages[key]
        if view is None:
            return root
        view_key, offset, view_numel = view  # old torch pickled storage slices
        if view_key not in storages:
            item = np.dtype(NP_DTYPE[root.dtype]).itemsize
            storages[view_key] = Storage(root.dtype, view_numel, root, offset * item)
        return storages[view_key]

    obj = unpickle(f, path, persistent_load)
    keys = unpickle(f, path)
    if not isinstance(keys, list):
        raise CheckpointFormatError(f'{path}: bad storage key list')
    remaining = os.fstat(f.fileno()).st_size - f.tell()
    for key in keys:
        storage = storages.get(key)
        if storage is None or storage.root is not None:
            raise CheckpointFormatError(f'{path}: unknown storage {key!r}')
        remaining -= 8 + storage.nbytes
        if remaining < 0:  # before read() allocates whatever size the file claims
            raise CheckpointFormatError(f'{path}: truncated file')
        if struct.unpack('<q', f.read(8))[0] != storage.numel:
            raise CheckpointFormatError(f'{path}: storage {key!r} has the wrong size')
        storage.attach(f.read(storage.nbytes), False, path)
    return _to_state_dict(obj, None, path)


def convert(path):
    """Parse a checkpoint file into a flat dict of numpy arrays (no cache involved)."""
    try:
        return _convert_file(path)
    except CheckpointFormatError as e:
        if str(e).startswith(f'{path}: '):
            raise
        raise CheckpointFormatError(f'{path}: {e}') from e  # errors raised deep in parsing
    except RecursionError as e:  # absurdly nested containers
        raise CheckpointFormatError(f'{path}: nesting too deep') from e


def _convert_file(path):
    with open(path, 'rb') as f:
        head = f.read(512)
        f.seek(0)
        if head[:1] == b'\x80':  # pickle protocol >= 2, as torch.save writes
            return _load_legacy(path, f)
    if head[:2] == b'PK':
        return _load_zip(path)
    if head[257:262] == b'ustar':
        raise CheckpointFormatError(f'{path}: torch < 0.4 tar checkpoint is not supported')
    raise CheckpointFormatError(
        f'{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy torch pickle)')
