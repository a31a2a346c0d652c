"""CLIP ResNet image embeddings without torch: weights, preprocessing, batched encoding.

    path = resolve_clip_weights(cfg.clip_weights or None)  # cached or downloaded RN50.pt
    encoder = load_image_encoder(path)
    feats = embed(encoder, images_uint8)                     # (N, 1024) float32 for RN50

Weights are read by `unode_jax.torch_io.weights` (OpenAI's TorchScript archives or
torch.save state dicts, with or without the `visual.` prefix) and ported to the Flax
`ModifiedResNet` in `unode_jax.models.clip_resnet`.

Preprocessing follows CLIP's torchvision transform (Resize(R, bicubic) on a PIL image,
CenterCrop(R), ToTensor, Normalize) on the device. JAX's bicubic (jax.image.resize
'bicubic' = scale_and_translate 'cubic': Keys cubic, a = -0.5, kernel widened when
downsampling (antialias), weights renormalised at the borders) stands in for PIL's, which
is the same filter. Like PIL's 8-bit resize we resample width then height, one axis at a
time, and round half up and clip to uint8 levels after each pass (a single 2-D float
resize differs from PIL by up to 8 levels where bicubic overshoots at edges). PIL's
fixed-point weights still flip the odd rounding: on real photos at most 0.03% of values
differ, by one level (tests/test_clip.py measures it).
"""

import functools
import hashlib
import os
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from unode_jax.runtime.errors import CheckpointFormatError
from unode_jax.torch_io import weights as torch_weights
from unode_jax.models.clip_resnet import (ModifiedResNet, clip_config_from_state_dict,
                                          convert_state_dict)
from unode_jax.torch_io.weights import RN50_SHA256

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RN50_URL = ('https://openaipublic.azureedge.net/clip/models/'
            'afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt')
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'unode_jax')
DOWNLOAD_TIMEOUT_S = 30

# Swapped out in tests, which must never reach the network.
_urlopen = urllib.request.urlopen


# --------------------------------------------------------------------------------------
# Batching.
# --------------------------------------------------------------------------------------


def _map_batches(fn, items, batch_size, progress=False, desc=None):
    """np.concatenate of fn(batch)[:len(batch)] over batches of `items` (a host array), the
    last one zero-padded to batch_size so fn compiles once. One batch stays in flight while
    the previous result is copied back."""
    n = len(items)
    outs, pending = [], None
    with tqdm(total=n, unit='img', desc=desc, disable=not progress) as bar:
        for start in range(0, max(n, 1), batch_size):
            batch = items[start:start + batch_size]
            rows = len(batch)
            if rows < batch_size:
                pad = np.zeros((batch_size - rows,) + batch.shape[1:], batch.dtype)
                batch = np.concatenate([batch, pad])
            out = fn(batch)
            if pending is not None:
                outs.append(np.asarray(pending[0])[:pending[1]])
                bar.update(pending[1])
            pending = (out, rows)
        outs.append(np.asarray(pending[0])[:pending[1]])
        bar.update(pending[1])
    return np.concatenate(outs)


# --------------------------------------------------------------------------------------
# Encoder.
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _jitted_apply(layers, width, heads, output_dim, image_resolution):
    # One jitted function per architecture, so encoders of the same model share compiles.
    return jax.jit(ModifiedResNet(layers, width, heads, output_dim, image_resolution).apply)


class ImageEncoder:
    """CLIP ResNet image encoder: encoder(images) maps float32 (N, R, R, 3) images, already
    CLIP-normalised at the model's resolution R, to (N, output_dim) float32 embeddings."""

    def __init__(self, variables, config, *, batch_size=64, source=None, sha256=None):
        self.config = dict(config, layers=tuple(config['layers']))
        self.resolution = int(config['image_resolution'])
        self.output_dim = int(config['output_dim'])
        self.batch_size = int(batch_size)
        self.source = source
        self.sha256 = sha256
        self.model = ModifiedResNet(**self.config)
        self.variables = jax.device_put(variables)
        self._apply = _jitted_apply(**self.config)

    def _encode(self, batch):
        """Device embeddings of one (batch_size, R, R, 3) batch; asynchronous."""
        return self._apply(self.variables, batch)

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        r = self.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 3):
            raise ValueError(f'expected CLIP-normalised images of shape (N, {r}, {r}, 3), got '
                             f'{images.shape}; use embed() for uint8 images of any size')
        return _map_batches(self._encode, images, self.batch_size)

    def __repr__(self):
        return (f'ImageEncoder({self.config}, batch_size={self.batch_size}, '
                f'source={self.source!r})')


def load_image_encoder(path, *, batch_size=64, expected_sha256=None,
                       cache=True) -> ImageEncoder:
    """ImageEncoder from a CLIP ResNet checkpoint: an OpenAI archive (RN50.pt, ...) or a
    state dict, full CLIP (`visual.` keys) or image encoder only.

    torch_weights.load_state_dict reads it (`cache`: keep a converted copy beside it) and
    verifies the sha256 against `expected_sha256` or, for an official file name such as
    RN50.pt, the published hash; `encoder.sha256` is the verified hash or None.
    """
    path = os.fspath(path)
    sd = torch_weights.load_state_dict(path, cache=cache, expected_sha256=expected_sha256)
    try:
        config = clip_config_from_state_dict(sd)
        variables = convert_state_dict(sd, config)
    except ValueError as e:  # The file is readable but is not a CLIP ResNet.
        raise CheckpointFormatError(f'{path}: {e}') from e
    sha256 = expected_sha256 or torch_weights.KNOWN_SHA256.get(os.path.basename(path))
    return ImageEncoder(variables, config, batch_size=batch_size, source=path, sha256=sha256)


# --------------------------------------------------------------------------------------
# Preprocessing.
# --------------------------------------------------------------------------------------


def _resized_hw(h, w, size):
    """torchvision Resize(size) with an int: the shorter side becomes size, the longer one
    size * long / short truncated."""
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def _resize_axis(x, axis, size):
    """Bicubic (Keys a = -0.5, antialiased) resize of one axis, rounded and clipped."""
    if x.shape[axis] == size:
        return x
    shape = x.shape[:axis] + (size,) + x.shape[axis + 1:]
    x = jax.image.scale_and_translate(x, shape, (axis,), jnp.array([size / x.shape[axis]]),
                                      jnp.zeros(1), 'cubic', antialias=True)
    return jnp.clip(jnp.floor(x + 0.5), 0, 255)  # PIL rounds half up.


@functools.partial(jax.jit, static_argnums=1)
def _preprocess_batch(images, resolution):
    x = images.astype(jnp.float32)
    n, h, w, c = x.shape
    nh, nw = _resized_hw(h, w, resolution)
    # Width first, then height, each rounded to uint8 levels: PIL's two 8-bit passes.
    x = _resize_axis(_resize_axis(x, 2, nw), 1, nh)
    # torchvision center_crop: offsets int(round(d / 2)), Python's round half to even.
    top, left = int(round((nh - resolution) / 2)), int(round((nw - resolution) / 2))
    x = x[:, top:top + resolution, left:left + resolution]
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,))  # Grayscale -> RGB.
    return (x / 255.0 - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def _as_uint8_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f'expected uint8 images, got {images.dtype}')
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f'expected images (N, H, W, 3), (N, H, W, 1) or (N, H, W), got '
                         f'{images.shape}')
    return images


def preprocess(images_uint8, resolution, *, batch_size=64) -> np.ndarray:
    """CLIP's preprocessing of uint8 (N, H, W, 3) images (grayscale (N, H, W) or
    (N, H, W, 1) is made RGB): shorter side to `resolution` (bicubic, antialiased when
    downsampling), centre crop, /255, CLIP mean/std. Float32 (N, R, R, 3), computed on the
    device in jitted batches."""
    images = _as_uint8_images(images_uint8)
    return _map_batches(lambda b: _preprocess_batch(b, int(resolution)), images, batch_size)


def embed(encoder: ImageEncoder, images_uint8, *, progress=False) -> np.ndarray:
    """encoder(preprocess(images_uint8, encoder.resolution)), batch by batch on the device:
    (N, output_dim) float32."""
    images = _as_uint8_images(images_uint8)

    def fn(batch):
        return encoder._encode(_preprocess_batch(batch, encoder.resolution))

    return _map_batches(fn, images, encoder.batch_size, progress=progress, desc='CLIP embed')


# --------------------------------------------------------------------------------------
# Weights on disk.
# --------------------------------------------------------------------------------------


def _not_found(path, cause=None):
    msg = (f'CLIP weights not found at {path}: download RN50.pt from {RN50_URL} and set '
           '--config.autoaug.clip_weights=PATH, or use --config.autoaug.embedder=random_cnn')
    if cause:
        msg += f' ({" ".join(str(cause).split())[:200]})'
    return FileNotFoundError(msg)


def _download(url, target, sha256):
    """Fetch url to target via a .tmp file, replaced into place only if its sha256 matches."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + '.tmp'
    digest = hashlib.sha256()
    try:
        with _urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as src, open(tmp, 'wb') as dst:
            total = src.headers.get('Content-Length')
            with tqdm(total=int(total) if total else None, unit='B', unit_scale=True,
                      desc=os.path.basename(target)) as bar:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise ValueError(f'sha256 mismatch: got {digest.hexdigest()}, expected {sha256}')
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resolve_clip_weights(path=None, *, download=True, cache_dir=None) -> str:
    """Path of CLIP RN50 weights.

    path given: it must exist. Otherwise `<cache_dir or ~/.cache/unode_jax>/clip/RN50.pt`,
    downloaded from RN50_URL (sha256-checked) when absent and `download`; a cached file's
    hash is checked when load_image_encoder reads it (torch_weights knows RN50.pt's).
    Raises a one-line FileNotFoundError saying how to get the file or switch embedder.
    """
    if path is not None:
        path = os.path.expanduser(os.fspath(path))
        if not os.path.isfile(path):
            raise _not_found(path)
        return path
    target = os.path.join(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR), 'clip', 'RN50.pt')
    if not os.path.isfile(target):
        if not download:
            raise _not_found(target, 'not cached; download disabled')
        try:
            _download(RN50_URL, target, RN50_SHA256)
        except Exception as e:  # Any failure reads the same to the user: no weights.
            raise _not_found(target, f'download failed: {type(e).__name__}: {e}') from e
    return target
