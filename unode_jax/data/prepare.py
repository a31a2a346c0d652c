"""Image preparation shared by every loader: gray or colour uint8 NHW(C) -> 3-channel
uint8 NHWC at the training size, with a bilinear (triangle-filter) resize in numpy.

prepare (one decoded image: data.resize's shorter side and centre crop, or a straight
resize) and prepare_batch (the Python API's arrays, uint8 or floats in [0, 1]) are the
one path of training, test, --mode=predict, Detector and the exported model's images.
numpy alone: the exported model's loader (serving/exported.py) imports this module."""
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


def check_geometry(image_size, resize, pre_crop) -> tuple[int, int, int, int] | None:
    """Validates prepare / read_image arguments; -> pre_crop as a tuple of 4 ints or None."""
    if (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
            or image_size < 1):
        raise ValueError(f'image_size must be a positive int, got {image_size!r}')
    if resize is not None and (isinstance(resize, bool)
                               or not isinstance(resize, (int, np.integer))
                               or resize < image_size):
        raise ValueError(f'resize must be None or an int >= image_size ({image_size}), '
                         f'got {resize!r}')
    if pre_crop is None:
        return None
    margins = tuple(pre_crop)
    if (len(margins) != 4 or any(isinstance(m, bool) or not isinstance(m, (int, np.integer))
                                 or m < 0 for m in margins)):
        raise ValueError('pre_crop must be 4 non-negative ints (top, left, bottom, right), '
                         f'got {pre_crop!r}')
    return tuple(int(m) for m in margins)


def resized_shape(height: int, width: int, resize: int) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to `resize`, as torchvision's Resize(int).

    The longer side is int(resize * long / short) (truncated, not rounded), so
    the output matches torchvision's geometry pixel for pixel.
    """
    if width <= height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def centre_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop(size): int(round((h - size) / 2.0)).

    Python's round (half to even) is what torchvision uses, so .5 cases agree too.
    """
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def prepare(x: np.ndarray, image_size: int, resize: int | None = None) -> np.ndarray:
    """One decoded uint8 image (H, W), (H, W, 1) or (H, W, 3) -> uint8 (S, S, 3), S=image_size.

    resize=None: straight bilinear resize to S x S (aspect not kept), exactly
    as `prepare.to_rgb` prepares the tfds datasets. resize=R (>= S): shorter
    side scaled to R, aspect kept (`resized_shape`), then the centre S x S
    (`centre_crop_offsets`). Gray stays 1 channel through the resize (3x less
    work) and is replicated to 3 channels at the end.
    """
    check_geometry(image_size, resize, None)
    if x.ndim == 2:
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[-1] not in (1, 3) or 0 in x.shape:
        raise ValueError(f'prepare needs a non-empty uint8 (H, W), (H, W, 1) or (H, W, 3) '
                         f'image, got {x.dtype} {x.shape}')
    if resize is None:
        return to_rgb(x[None], image_size)[0]
    h, w = resized_shape(x.shape[0], x.shape[1], resize)
    if (h, w) != x.shape[:2]:
        x = resize_bilinear(x[None], h, w)[0]
    top, left = centre_crop_offsets(h, w, image_size)
    x = x[top:top + image_size, left:left + image_size]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def as_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 images unchanged; floating-point images, every value in [0, 1] (what most
    notebooks hold), as np.round(x * 255) in uint8. Anything else is a ValueError."""
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f'images must be uint8 (0 to 255) or floats in [0, 1], got {x.dtype}')
    lo, hi = float(x.min()), float(x.max())
    if np.isnan(lo) or np.isnan(hi):  # min and max propagate any NaN
        raise ValueError('images hold NaN: pass uint8 (0 to 255) or floats in [0, 1]')
    if lo < 0 or hi > 1:
        raise ValueError(f'float images must lie in [0, 1], got values from {lo:g} to {hi:g} '
                         f'(pass 0 to 255 as uint8)')
    if x.dtype.itemsize < 4:  # float16: x * 255 in float32, so that k / 255 rounds to k
        x = x.astype(np.float32)
    return np.round(x * 255).astype(np.uint8)


def prepare_batch(x, image_size: int, resize: int | None = None) -> np.ndarray:
    """Images (N, H, W) or (N, H, W, C), C = 1 or 3, uint8 or floats in [0, 1] (as_uint8)
    -> uint8 (N, S, S, 3), each prepared as `prepare` prepares one read from a file (the
    Python API's input: Detector and the exported model)."""
    x = np.asarray(x)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise ValueError(f'images must be uint8 or [0, 1] float arrays (N, H, W) or '
                         f'(N, H, W, C) with C = 1 or 3, got {x.dtype} {x.shape}')
    if not len(x):
        raise ValueError('no images given')
    if not x.size:
        raise ValueError(f'images have no pixels: shape {x.shape}')
    check_geometry(image_size, resize, None)
    x = as_uint8(x)
    if resize is None:  # One batched resize: each image as `prepare` resizes it alone.
        return to_rgb(x, image_size)
    return np.stack([prepare(im, image_size, resize) for im in x])
