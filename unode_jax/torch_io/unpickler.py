"""torch's pickles read without torch, and without running code: a whitelisting
unpickler that allows only what rebuilds tensors (TorchScript module classes become
inert containers), the storages it references, and their materialisation as numpy."""
from __future__ import annotations

import collections
import pickle

import numpy as np

from unode_jax.runtime.errors import CheckpointFormatError, UnsafeCheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch dtype name -> little-endian numpy dtype of the stored bytes (bf16 read as raw uint16).
NP_DTYPE = {
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
StorageType = collections.namedtuple('StorageType', 'dtype')
_DType = collections.namedtuple('_DType', 'name')


class _Fn(collections.namedtuple('_Fn', 'qualname fn')):
    __slots__ = ()

    def __call__(self, *args):
        return self.fn(*args)


class Storage:
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
        return self.numel * np.dtype(NP_DTYPE[self.dtype]).itemsize

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


class TensorRef:
    __slots__ = ('storage', 'offset', 'size', 'stride', 'dtype')

    def __init__(self, storage, offset, size, stride, dtype):
        if not isinstance(storage, Storage):
            raise CheckpointFormatError(f'tensor rebuilt from {type(storage).__name__}')
        size, stride = tuple(size), tuple(stride)
        ints = (offset, *size, *stride)
        if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in ints):
            raise CheckpointFormatError(f'bad tensor geometry {offset!r} {size!r} {stride!r}')
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride):
    return TensorRef(storage, offset, size, stride, getattr(storage, 'dtype', None))


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
        safe[f'torch.{name}'] = safe[f'torch.cuda.{name}'] = StorageType(dtype)
    safe['torch.storage.UntypedStorage'] = StorageType('uint8')
    safe['torch.UntypedStorage'] = StorageType('uint8')
    for name in list(NP_DTYPE) + list(_DTYPE_ALIASES):
        safe[f'torch.{name}'] = _DType(_DTYPE_ALIASES.get(name, name))
    # TorchScript pickles tag typed lists/dicts and pickle Device attributes by name.
    for name in ['build_intlist', 'build_tensorlist', 'build_doublelist', 'build_boollist']:
        safe[f'torch.jit._pickle.{name}'] = _Fn(name, lambda data: data)
    safe['torch.jit._pickle.restore_type_tag'] = _Fn('restore_type_tag', lambda v, t: v)
    safe['torch.device'] = _Fn('torch.device', lambda *args: ':'.join(map(str, args)))
    return safe


_SAFE_GLOBALS = _build_safe_globals()


class ScriptObject:
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
                    name, (ScriptObject,), {'__slots__': (), 'qualname': qualname})
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
        if not isinstance(pid[1], StorageType):
            raise CheckpointFormatError(f'{self._source}: bad storage type {pid[1]!r}')
        return self._persistent(pid[1:])


def unpickle(file, source, persistent_load=None):
    try:
        return _Unpickler(file, source, persistent_load).load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except Exception as e:  # any failure on untrusted bytes means a corrupt file
        raise CheckpointFormatError(
            f'{source}: corrupt pickle ({type(e).__name__}: {e})') from e


def materialize(ref, source):
    buf, byte_offset, nbytes, big = ref.storage.data()
    name = ref.dtype
    if name not in NP_DTYPE:
        raise CheckpointFormatError(f'{source}: unsupported tensor dtype {name!r}')
    dtype = np.dtype(NP_DTYPE[name])
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
