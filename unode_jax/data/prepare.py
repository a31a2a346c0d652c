"""Image preparation shared by every loader: gray or colour uint8 NHW(C) -> 3-channel
uint8 NHWC at the training size, with a bilinear (triangle-filter) resize in numpy."""
from __future__ import annotations

import numpy as np

# Images resized per matmul chunk: bounds the float32 intermediates.
_RESIZE_CHUNK = 4096


def to_rgb(x: np.ndarray, size: int) -> np.ndarray:
    """NHW / NHWC (1 or 3 channels) uint8 -> NHWC uint8, 3 channels, size^2."""
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:3] != (size, size):
        # Resize before replicating gray channels: 3x less work.
        x = resize_bilinear(x, size, size)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def _linear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of triangle-filter weights, half-pixel centres.

    Same filter as PIL's BILINEAR (and jax.image.resize 'linear' with
    antialias): the triangle widens by in/out when shrinking, so downsampling
    averages instead of aliasing. Rows are renormalised at the borders.
    """
    scale = in_size / out_size
    width = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    dist = (np.arange(in_size) + 0.5)[None, :] - centres[:, None]
    w = np.maximum(0.0, 1.0 - np.abs(dist) / width)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 NHWC images -> uint8 (N, height, width, C).

    Separable resize as two small matmuls per chunk in numpy: the whole
    60k-image set takes about a second on CPU, with no per-image Python loop,
    no XLA compile per shape and nothing put on the accelerator.
    """
    n, h, w, c = x.shape
    wh = _linear_weights(h, height)             # (height, h)
    ww = _linear_weights(w, width)              # (width, w)
    out = np.empty((n, height, width, c), np.uint8)
    for s in range(0, n, _RESIZE_CHUNK):
        chunk = x[s:s + _RESIZE_CHUNK].astype(np.float32)
        rows = np.matmul(wh, chunk.reshape(len(chunk), h, w * c))
        cols = np.matmul(ww, rows.reshape(len(chunk), height, w, c))
        out[s:s + _RESIZE_CHUNK] = np.clip(np.rint(cols), 0, 255)
    return out
