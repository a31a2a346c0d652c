"""Read PyTorch weights without torch: TorchScript archives, torch.save zip and legacy files.

Every pickle goes through a whitelisting unpickler: only what rebuilds tensors is allowed, and
TorchScript module classes (``__torch__.*``) become inert containers, so a checkpoint can never
run code. The result is a flat ``{dotted key: np.ndarray}`` dict with the keys torch's
``state_dict()`` would give; fp16/bf16 become float32, integers keep their dtype.

Converted weights are cached beside the source as ``<path>.safetensors``.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import re
import stat
import struct
import tempfile
import warnings
import zipfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


class UnsafeCheckpointError(ValueError):
    """A pickle in the checkpoint asked for a global outside the whitelist."""


class CheckpointFormatError(ValueError):
    """Not a torch checkpoint, corrupt, or a tensor kind this reader does not support."""


RN50_SHA256 = 'afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762'
# Basenames that claim to be official files: their content must match.
KNOWN_SHA256 = {'RN50.pt': RN50_SHA256}
_CLIP_URL = 'https://openaipublic.azureedge.net/clip/models/{sha}/{name}'
# torch.hub's convention, used by torchvision's files: <name>-<sha256 prefix>.pth.
_HUB_HASH = re.compile(r'-([0-9a-f]{8,64})\.pth?$')

_CACHE_FORMAT = 'unode_jax.torch_weights/1'
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch dtype name -> little-endian numpy dtype of the stored bytes (bf16 read as raw uint16).
_NP_DTYPE = {
    'float32': '<f4', 'float64': '<f8', 'float16': '<f2', 'bfloat16': '<u2',
    'int64': '<i8', 'int32': '<i4', 'int16': '<i2', 'int8': 'i1', 'uint8': 'u1', 'bool': '?',
    'uint16': '<u2', 'uint32': '<u4', 'uint64': '<u8', 'complex64': '<c8', 'complex128': '<c16',
}
_DTYPE_ALIASES = {
    'float': 'float32', 'double': 'float64', 'half': 'float16', 'long': 'int64',
    'int': 'int32', 'short': 'int16', 'cfloat': 'complex64', 'cdouble': 'complex128',
}
_STORAGE_DTYPE = {
    'FloatStorage': 'float32', 'DoubleStorage': 'float64', 'HalfStorage': 'float16',
    'BFloat16Storage': 'bfloat16', 'LongStorage': 'int64', 'IntStorage': 'int32',
    'ShortStorage': 'int16', 'CharStorage': 'int8', 'ByteStorage': 'uint8',
    'BoolStorage': 'bool', 'ComplexFloatStorage': 'complex64',
    'ComplexDoubleStorage': 'complex128',
}

# Whitelist entries are immutable (namedtuple) values: a hostile BUILD opcode cannot patch them.
_StorageType = collections.namedtuple('_StorageType', 'dtype')
_DType = collections.namedtuple('_DType', 'name')


class _Fn(collections.namedtuple('_Fn', 'qualname fn')):
    __slots__ = ()

    def __call__(self, *args):
        return self.fn(*args)


class _Storage:
    """A storage named by a persistent id; its bytes are attached once the pickle is read."""

    __slots__ = ('dtype', 'numel', 'buf', 'big', 'root', 'byte_offset')

    def __init__(self, dtype, numel, root=None, byte_offset=0):
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointFormatError(f'bad storage size {numel!r}')
        self.dtype, self.numel = dtype, numel
        self.buf, self.big = None, False
        self.root, self.byte_offset = root, byte_offset

    @property
    def nbytes(self):
        return self.numel * np.dtype(_NP_DTYPE[self.dtype]).itemsize

    def attach(self, buf, big, source):
        if len(buf) < self.nbytes:
            raise CheckpointFormatError(
                f'{source}: storage holds {len(buf)} bytes, expected {self.nbytes} (truncated?)')
        self.buf, self.big = buf, big

    def data(self):
        """(bytes, byte offset, byte length, big-endian) of this storage's memory."""
        root = self.root if self.root is not None else self
        if root.buf is None or self.byte_offset + self.nbytes > len(root.buf):
            raise CheckpointFormatError('a tensor refers to a storage with no data')
        return root.buf, self.byte_offset, self.nbytes, root.big


class _TensorRef:
    __slots__ = ('storage', 'offset', 'size', 'stride', 'dtype')

    def __init__(self, storage, offset, size, stride, dtype):
        if not isinstance(storage, _Storage):
            raise CheckpointFormatError(f'tensor rebuilt from {type(storage).__name__}')
        size, stride = tuple(size), tuple(stride)
        ints = (offset, *size, *stride)
        if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in ints):
            raise CheckpointFormatError(f'bad tensor geometry {offset!r} {size!r} {stride!r}')
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride):
    return _TensorRef(storage, offset, size, stride, getattr(storage, 'dtype', None))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    if metadata:  # conj/neg bits would change the values
        raise CheckpointFormatError(f'unsupported tensor metadata {metadata!r}')
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, _DType):
        raise CheckpointFormatError(f'bad tensor dtype {dtype!r}')
    if metadata:
        raise CheckpointFormatError(f'unsupported tensor metadata {metadata!r}')
    tensor = _rebuild_tensor(storage, offset, size, stride)
    tensor.dtype = dtype.name
    return tensor


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data


def _build_safe_globals():
    safe = {'collections.OrderedDict': collections.OrderedDict}
    for name, fn in [('_rebuild_tensor', _rebuild_tensor),
                     ('_rebuild_tensor_v2', _rebuild_tensor_v2),
                     ('_rebuild_tensor_v3', _rebuild_tensor_v3),
                     ('_rebuild_parameter', _rebuild_parameter),
                     ('_rebuild_parameter_with_state', _rebuild_parameter)]:
        safe[f'torch._utils.{name}'] = _Fn(f'torch._utils.{name}', fn)
    for name, dtype in _STORAGE_DTYPE.items():
        # Files written from GPU by old torch name the CUDA storage class.
        safe[f'torch.{name}'] = safe[f'torch.cuda.{name}'] = _StorageType(dtype)
    safe['torch.storage.UntypedStorage'] = _StorageType('uint8')
    safe['torch.UntypedStorage'] = _StorageType('uint8')
    for name in list(_NP_DTYPE) + list(_DTYPE_ALIASES):
        safe[f'torch.{name}'] = _DType(_DTYPE_ALIASES.get(name, name))
    # TorchScript pickles tag typed lists/dicts and pickle Device attributes by name.
    for name in ['build_intlist', 'build_tensorlist', 'build_doublelist', 'build_boollist']:
        safe[f'torch.jit._pickle.{name}'] = _Fn(name, lambda data: data)
    safe['torch.jit._pickle.restore_type_tag'] = _Fn('restore_type_tag', lambda v, t: v)
    safe['torch.device'] = _Fn('torch.device', lambda *args: ':'.join(map(str, args)))
    return safe


_SAFE_GLOBALS = _build_safe_globals()


class _ScriptObject:
    """Inert stand-in for a TorchScript object: keeps the pickled state and nothing else."""

    __slots__ = ('state',)
    qualname = ''

    def __setstate__(self, state):
        self.state = state


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, source, persistent_load):
        super().__init__(file, encoding='utf-8')
        self._source = source
        self._persistent = persistent_load
        # Fresh classes per file, so nothing one file does can leak into another load.
        self._script_classes = {}

    def find_class(self, module, name):
        qualname = f'{module}.{name}'
        if module == '__torch__' or module.startswith('__torch__.'):
            if qualname not in self._script_classes:
                self._script_classes[qualname] = type(
                    name, (_ScriptObject,), {'__slots__': (), 'qualname': qualname})
            return self._script_classes[qualname]
        if qualname in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[qualname]
        raise UnsafeCheckpointError(
            f'{self._source}: refusing to load global {qualname!r}: only tensor data is '
            'allowed (the file is malicious, or holds a pickled object instead of weights)')

    def persistent_load(self, pid):
        if self._persistent is None:
            raise CheckpointFormatError(f'{self._source}: unexpected persistent id {pid!r}')
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointFormatError(f'{self._source}: bad persistent id {pid!r}')
        typename = pid[0].decode('ascii') if isinstance(pid[0], bytes) else pid[0]
        if typename != 'storage':
            raise CheckpointFormatError(f'{self._source}: unsupported persistent id {typename!r}')
        if not isinstance(pid[1], _StorageType):
            raise CheckpointFormatError(f'{self._source}: bad storage type {pid[1]!r}')
        return self._persistent(pid[1:])


def _unpickle(file, source, persistent_load=None):
    try:
        return _Unpickler(file, source, persistent_load).load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except Exception as e:  # any failure on untrusted bytes means a corrupt file
        raise CheckpointFormatError(
            f'{source}: corrupt pickle ({type(e).__name__}: {e})') from e


def _materialize(ref, source):
    buf, byte_offset, nbytes, big = ref.storage.data()
    name = ref.dtype
    if name not in _NP_DTYPE:
        raise CheckpointFormatError(f'{source}: unsupported tensor dtype {name!r}')
    dtype = np.dtype(_NP_DTYPE[name])
    if big:
        dtype = dtype.newbyteorder('>')
    flat = np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=byte_offset)
    if 0 in ref.size:
        view = np.zeros(ref.size, dtype)
    else:
        # Bounds check before as_strided, which would otherwise read arbitrary memory.
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= flat.size:
            raise CheckpointFormatError(
                f'{source}: tensor {ref.size} reaches element {last} of a storage of '
                f'{flat.size}')
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], ref.size, [s * dtype.itemsize for s in ref.stride],
            writeable=False)
    if name == 'float16':
        return view.astype(np.float32, order='C')
    if name == 'bfloat16':  # bf16 is the top half of a float32
        return (view.astype(np.uint32, order='C') << 16).view(np.float32)
    return view.astype(dtype.newbyteorder('='), order='C')


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
    tensors = [(k, v) for k, v in state.items() if isinstance(v, _TensorRef)]
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
        if isinstance(value, _ScriptObject) and decls.get(value.qualname, ()) is not None:
            _flatten_script(value, decls, f'{prefix}{key}.', out, active)
    active.discard(id(obj))


def _flatten_tree(obj, prefix, out, active):
    if isinstance(obj, _TensorRef):
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
    if isinstance(obj, _ScriptObject):
        _flatten_script(obj, decls or {}, '', refs, set())
    else:
        if isinstance(obj, _TensorRef):
            raise CheckpointFormatError(f'{source}: holds a single tensor, not a state dict')
        if isinstance(obj, dict) and not any(isinstance(v, _TensorRef) for v in obj.values()):
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
            arrays[id(ref)] = _materialize(ref, source)
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
                storages[key] = _Storage(storage_type.dtype, numel)
            return storages[key]

        try:
            with zf.open(root + 'data.pkl') as f:
                obj = _unpickle(f, path, persistent_load)
            for key, storage in storages.items():
                record = f'{root}data/{key}'
                if record not in names:
                    raise CheckpointFormatError(f'{path}: missing tensor data {record}')
                storage.attach(zf.read(record), big, path)
            decls = _script_declarations(zf, root) if isinstance(obj, _ScriptObject) else None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointFormatError(f'{path}: corrupt zip archive ({e})') from e
    return _to_state_dict(obj, decls, path)


def _load_legacy(path, f):
    """The pre-1.6 format: pickled magic, protocol, sys info, data, storage keys, raw storages."""
    magic = _unpickle(f, path)
    if magic != _LEGACY_MAGIC:
        raise CheckpointFormatError(f'{path}: a pickle, but not a torch checkpoint')
    protocol = _unpickle(f, path)
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointFormatError(f'{path}: unsupported legacy protocol {protocol!r}')
    _unpickle(f, path)  # sys info; storages are little-endian whatever the writer's host
    storages = {}

    def persistent_load(args):
        if len(args) != 5:
            raise CheckpointFormatError(f'{path}: bad storage id {args!r}')
        storage_type, key, _location, numel, view = args
        if key not in storages:
            storages[key] = _Storage(storage_type.dtype, numel)
        root = storages[key]
        if view is None:
            return root
        view_key, offset, view_numel = view  # old torch pickled storage slices
        if view_key not in storages:
            item = np.dtype(_NP_DTYPE[root.dtype]).itemsize
            storages[view_key] = _Storage(root.dtype, view_numel, root, offset * item)
        return storages[view_key]

    obj = _unpickle(f, path, persistent_load)
    keys = _unpickle(f, path)
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


def _convert(path):
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


def _cache_metadata(st, sha, keys):
    return {'format': _CACHE_FORMAT, 'source_size': str(st.st_size),
            'source_mtime_ns': str(st.st_mtime_ns), 'sha256': sha or '',
            'keys': json.dumps(list(keys))}


def _read_cache(cache_path, st, want):
    """The cached weights if they were converted from this very file, else None."""
    if not os.path.isfile(cache_path):
        return None
    try:
        with safe_open(cache_path, framework='np') as f:
            meta = f.metadata() or {}
            expected = _cache_metadata(st, want, [])
            if any(meta.get(k) != expected[k]
                   for k in ('format', 'source_size', 'source_mtime_ns')):
                return None
            if want and meta.get('sha256') != want:
                return None
            keys = json.loads(meta['keys'])
            if sorted(keys) != sorted(f.keys()):
                return None
            return {k: f.get_tensor(k) for k in keys}
    except Exception:  # a corrupt cache is just rebuilt
        return None


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
    weights = _convert(path)
    if cache:
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            _write_cache(cache_path, weights, st, sha)
    return weights
