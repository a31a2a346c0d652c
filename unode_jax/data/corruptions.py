"""Corrupted test sets: CIFAR-10-C style (Hendrycks & Dietterich, ICLR 2019) and the
geometric corruptions of MNIST-C (Mu & Gilmer, 2019), on uint8 NHWC RGB batches.

Photometric corruptions use the CIFAR (32 px) constants of
`hendrycks/robustness: ImageNet-C/create_c/make_cifar_c.py`; rotate/scale/shear/translate use
`google-research/mnist-c: corruptions.py`. Both reference files are numpy + skimage + OpenCV +
Wand; here they are rewritten with numpy, scipy.ndimage and Pillow so that no OpenCV,
scikit-image or ImageMagick is needed. The `imagecorruptions` package is not used: it carries
the 224 px ImageNet-C constants (not the CIFAR ones) and needs OpenCV and scikit-image.

Each image draws from `np.random.default_rng([seed, index])`, so an image's corruption does not
depend on the rest of the batch, and the same draws are reused across severities (a severity
ladder then scales one noise sample, which keeps the strength monotone per image).
Outputs are rounded to uint8 (the reference code truncates with `np.uint8`, <= 1 level darker).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

CORRUPTIONS = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise',
               'gaussian_blur', 'glass_blur', 'motion_blur', 'defocus_blur', 'zoom_blur',
               'brightness', 'contrast', 'saturate', 'pixelate', 'jpeg_compression',
               'rotate', 'scale', 'shear', 'translate')

# MNIST-C's images are 28 px and its geometric transforms are stated at that size.
_MNIST_SIZE = 28


def corrupt(images_uint8: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Returns `images_uint8` (N, H, W, 3) uint8 corrupted by `name` at `severity` (1..5)."""
    if name not in _FUNCTIONS:
        raise ValueError(f'unknown corruption {name!r}; valid: {", ".join(CORRUPTIONS)}')
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) \
            or not 1 <= severity <= 5:
        raise ValueError(f'severity must be an int in 1..5, got {severity!r}')
    x = np.asarray(images_uint8)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f'expected uint8 (N, H, W, 3) images, got {x.dtype} {x.shape}')
    if x.shape[0] == 0:
        return x.copy()
    out = _FUNCTIONS[name](x, int(severity) - 1, int(seed))
    assert out.shape == x.shape and out.dtype == np.uint8
    return out


# ------------------------------------------------------------------ helpers

def _rngs(n: int, seed: int):
    return [np.random.default_rng([seed, i]) for i in range(n)]


def _per_image(n: int, seed: int, draw) -> np.ndarray:
    """Stacks `draw(rng)` over images, each image with its own (seed, index) stream."""
    return np.stack([draw(rng) for rng in _rngs(n, seed)])


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    # skimage.filters.gaussian(multichannel=True) = ndimage.gaussian_filter, mode 'nearest',
    # truncate 4, no blur across channels (or, here, across the batch).
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode='nearest', truncate=4.0)


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    # skimage.color.rgb2hsv: hue 0 and saturation 0 where the pixel is grey.
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    grey = delta == 0
    safe = np.where(grey, 1.0, delta)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Same precedence as skimage on ties: blue over green over red.
    h = np.where(r == v, (g - b) / safe, 0.0)
    h = np.where(g == v, 2.0 + (b - r) / safe, h)
    h = np.where(b == v, 4.0 + (r - g) / safe, h)
    h = np.where(grey, 0.0, (h / 6.0) % 1.0)
    s = np.where(grey, 0.0, delta / np.where(v == 0, 1.0, v))
    return np.stack([h, s, v], axis=-1)


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    # Same values as skimage.color.hsv2rgb's six-sector table, in closed form: channel n in
    # (r, g, b) = (5, 3, 1) is v - v s clip(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6.
    h, s, v = hsv[..., :1], hsv[..., 1:2], hsv[..., 2:]
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _hsv_map(x: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    hsv = _rgb2hsv(_to_float(x))
    hsv[..., channel] = np.clip(hsv[..., channel] * scale + shift, 0, 1)
    return _to_uint8(_hsv2rgb(hsv))


# ------------------------------------------------------------- noise (make_cifar_c.py)

def _gaussian_noise(x, s, seed):
    # make_cifar_c.py gaussian_noise: x + N(0, c^2), x in [0, 1].
    c = [0.04, 0.06, .08, .09, .10][s]
    z = _per_image(len(x), seed, lambda rng: rng.standard_normal(x.shape[1:]))
    return _to_uint8(_to_float(x) + c * z)


def _shot_noise(x, s, seed):
    # make_cifar_c.py shot_noise: Poisson(x * c) / c.
    c = [500, 250, 100, 75, 50][s]
    xf = _to_float(x)
    return _to_uint8(np.stack([rng.poisson(xi * c) / c
                               for rng, xi in zip(_rngs(len(x), seed), xf)]))


def _impulse_noise(x, s, seed):
    # make_cifar_c.py impulse_noise = skimage random_noise(mode='s&p', amount=c): each value
    # flips with probability c, half of the flips to 1 (salt), half to 0 (pepper).
    c = [.01, .02, .03, .05, .07][s]
    u = _per_image(len(x), seed, lambda rng: rng.random((2,) + x.shape[1:]))
    flipped, salt = u[:, 0] < c, u[:, 1] < 0.5
    return np.where(flipped, np.where(salt, 255, 0), x).astype(np.uint8)


def _speckle_noise(x, s, seed):
    # make_cifar_c.py speckle_noise: x + x * N(0, c^2).
    c = [.06, .1, .12, .16, .2][s]
    z = _per_image(len(x), seed, lambda rng: rng.standard_normal(x.shape[1:]))
    xf = _to_float(x)
    return _to_uint8(xf + xf * c * z)


# -------------------------------------------------------------- blur (make_cifar_c.py)

def _gaussian_blur(x, s, seed):
    # make_cifar_c.py gaussian_blur: skimage gaussian, sigma c.
    c = [.4, .6, 0.7, .8, 1][s]
    return _to_uint8(_gaussian(_to_float(x), c))


def _glass_blur(x, s, seed):
    # make_cifar_c.py glass_blur: blur, "locally shuffle" pixels, blur again. In the reference
    # `x[h, w], x[h', w'] = x[h', w'], x[h, w]` swaps numpy views, so it really copies
    # x[h', w'] into x[h, w]. The loop runs h, w downwards and with max_delta 1 the offsets are
    # randint(-1, 1) in {-1, 0}, so every read hits a not yet visited pixel: one pass is exactly
    # the gather x[h, w] <- x[h + dy, w + dx] over the visited range, done here for the batch.
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2),
                                (0.4, 1, 2)][s]
    n, hgt, wid, _ = x.shape
    y = _to_uint8(_gaussian(_to_float(x), sigma))
    rows = np.arange(delta + 1, hgt - delta + 1)  # reference: range(32 - d, d, -1), reversed
    cols = np.arange(delta + 1, wid - delta + 1)
    offsets = _per_image(n, seed, lambda rng: rng.integers(
        -delta, delta, size=(iterations, 2, len(rows), len(cols))))
    batch = np.arange(n)[:, None, None]
    for it in range(iterations):
        src_r = rows[None, :, None] + offsets[:, it, 0]
        src_c = cols[None, None, :] + offsets[:, it, 1]
        y[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = y[batch, src_r, src_c]
    return _to_uint8(_gaussian(_to_float(y), sigma))


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    # make_cifar_c.py disk(): an aliased disk on a 17x17 grid smoothed by
    # cv2.GaussianBlur(ksize=(3, 3), sigmaX=alias_blur) (sampled 3-tap Gaussian, reflect-101
    # border), then cropped to its non-zero support since the rest only costs time.
    half = max(8, int(np.ceil(radius)))
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    kernel /= kernel.sum()
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    taps /= taps.sum()
    kernel = ndimage.correlate1d(kernel, taps, axis=0, mode='mirror')
    kernel = ndimage.correlate1d(kernel, taps, axis=1, mode='mirror')
    nz_r, nz_c = np.nonzero(kernel)
    return kernel[nz_r.min():nz_r.max() + 1, nz_c.min():nz_c.max() + 1]


def _defocus_blur(x, s, seed):
    # make_cifar_c.py defocus_blur: cv2.filter2D with the disk kernel (reflect-101 = 'mirror').
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s]
    kernel = _disk(radius, alias)
    return _to_uint8(ndimage.correlate(_to_float(x), kernel[None, :, :, None], mode='mirror'))


def _motion_blur(x, s, seed):
    # make_cifar_c.py motion_blur calls ImageMagick's MotionBlurImage(radius, sigma, angle),
    # angle ~ U(-45, 45) degrees. Approximation without Wand: ImageMagick's kernel, i.e. a
    # one-sided line of 2 * ceil(radius) + 1 taps weighted exp(-i^2 / (2 sigma^2)) and
    # sampled at round(i * (cos, sin)(angle)), edge pixels repeated; ImageMagick's own
    # sub-pixel rounding and quantisation may differ slightly.
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][s]
    n, hgt, wid, _ = x.shape
    width = 2 * int(np.ceil(radius)) + 1
    taps = np.exp(-np.arange(width) ** 2 / (2.0 * sigma ** 2))
    taps /= taps.sum()
    angle = np.deg2rad(_per_image(n, seed, lambda rng: rng.uniform(-45, 45)))
    i = np.arange(width)
    dx = np.ceil(i[None] * np.cos(angle)[:, None] - 0.5).astype(np.int64)  # (n, width)
    dy = np.ceil(i[None] * np.sin(angle)[:, None] - 0.5).astype(np.int64)
    xf = _to_float(x)
    out = np.zeros_like(xf)
    batch = np.arange(n)[:, None, None]
    for k in range(width):
        rows = np.clip(np.arange(hgt)[None] + dy[:, k, None], 0, hgt - 1)[:, :, None]
        cols = np.clip(np.arange(wid)[None] + dx[:, k, None], 0, wid - 1)[:, None, :]
        out += taps[k] * xf[batch, rows, cols]
    return _to_uint8(out)


def _linear_zoom_matrix(size_in: int, zoom: float, size_keep: int) -> np.ndarray:
    """Rows of ndimage.zoom(order=1)'s linear interpolation for one axis: output i samples
    input i * (size_in - 1) / (size_out - 1), size_out = round(size_in * zoom); only the
    centre `size_keep` rows, which clipped_zoom keeps."""
    size_out = int(round(size_in * zoom))
    trim = (size_out - size_keep) // 2
    pos = np.arange(trim, trim + size_keep) * ((size_in - 1) / max(size_out - 1, 1))
    low = np.clip(np.floor(pos).astype(np.int64), 0, size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = pos - low
    matrix = np.zeros((size_keep, size_in))
    np.add.at(matrix, (np.arange(size_keep), low), 1 - frac)
    np.add.at(matrix, (np.arange(size_keep), high), frac)
    return matrix


def _clipped_zoom(x: np.ndarray, zoom: float) -> np.ndarray:
    # make_cifar_c.py clipped_zoom: centre crop of ceil(size / zoom), bilinear scipy zoom,
    # centre trim; per axis so that non-square images work too. The separable bilinear zoom
    # is two batched matmuls (same values as ndimage.zoom, ~25x faster on batches).
    _, hgt, wid, _ = x.shape
    ch, cw = int(np.ceil(hgt / zoom)), int(np.ceil(wid / zoom))
    top, left = (hgt - ch) // 2, (wid - cw) // 2
    rows = _linear_zoom_matrix(ch, zoom, hgt).astype(x.dtype)
    cols = _linear_zoom_matrix(cw, zoom, wid).astype(x.dtype)
    crop = np.ascontiguousarray(x[:, top:top + ch, left:left + cw].transpose(0, 3, 1, 2))
    return (rows @ crop @ cols.T).transpose(0, 2, 3, 1)


def _zoom_blur(x, s, seed):
    # make_cifar_c.py zoom_blur: average of the image and its zooms by each factor in c.
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][s]
    xf = _to_float(x).astype(np.float32)
    out = np.zeros_like(xf)
    for zoom in c:
        out += _clipped_zoom(xf, float(zoom))
    return _to_uint8((xf + out) / (len(c) + 1))


# ------------------------------------------------------------ digital (make_cifar_c.py)

def _brightness(x, s, seed):
    # make_cifar_c.py brightness: HSV value + c.
    return _hsv_map(x, 2, 1.0, [.05, .1, .15, .2, .3][s])


def _contrast(x, s, seed):
    # make_cifar_c.py contrast: (x - mean) * c + mean, mean per image and channel.
    c = [.75, .5, .4, .3, 0.15][s]
    xf = _to_float(x)
    means = xf.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((xf - means) * c + means)


def _saturate(x, s, seed):
    # make_cifar_c.py saturate: HSV saturation * c0 + c1. Severities 1-2 desaturate and 3-5
    # oversaturate; grey pixels (hue 0) turn reddish once c1 > 0, as in skimage.
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][s]
    return _hsv_map(x, 1, scale, shift)


def _pixelate(x, s, seed):
    # make_cifar_c.py pixelate: PIL BOX resize down to int(size * c), then BOX back up (the
    # reference uses BOX both ways, not NEAREST).
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s]
    hgt, wid = x.shape[1:3]
    small = (max(1, int(wid * c)), max(1, int(hgt * c)))
    return np.stack([np.asarray(Image.fromarray(img).resize(small, Image.BOX)
                                .resize((wid, hgt), Image.BOX)) for img in x])


def _jpeg_compression(x, s, seed):
    # make_cifar_c.py jpeg_compression: PIL JPEG encode/decode in memory at quality c.
    c = [80, 65, 58, 50, 40][s]
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format='JPEG', quality=c)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert('RGB')))
    return np.stack(out)


# -------------------------------------------------------------- geometric (MNIST-C)
# mnist-c corruptions.py already defines 5-level ladders for these four and publishes MNIST-C
# at one of them: shear and rotate at severity 2, scale and translate at severity 3. Severity
# k here is MNIST-C's level k, so the published setting sits inside the ladder (2 or 3).
# Like skimage.transform.warp in the reference: bilinear, black outside, the inverse map
# fixes the image centre, and random directions are +-1 signs.

def _warp(x: np.ndarray, inv: np.ndarray, shift_xy=(0.0, 0.0)) -> np.ndarray:
    """Warps the batch by the inverse map p_in = inv @ (p_out - centre) + centre + shift, where
    points are (x, y) = (column, row) as in skimage."""
    n, hgt, wid, _ = x.shape
    inv_rc = inv[::-1, ::-1]  # (x, y) -> (row, col)
    centre = np.array([(hgt - 1) / 2.0, (wid - 1) / 2.0])
    offset = centre - inv_rc @ centre + np.array(shift_xy[::-1])
    # Batch and channel share one trailing axis that the identity map leaves untouched.
    flat = x.transpose(1, 2, 0, 3).reshape(hgt, wid, n * 3).astype(np.float32)
    matrix = np.eye(3)
    matrix[:2, :2] = inv_rc
    out = ndimage.affine_transform(flat, matrix, offset=np.append(offset, 0.0), order=1,
                                   mode='constant', cval=0.0)
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8).reshape(hgt, wid, n, 3) \
        .transpose(2, 0, 1, 3)


def _grouped(x, seed, num_signs, make):
    """Applies `make(signs)` -> warped batch to each group of images that drew the same signs."""
    signs = _per_image(len(x), seed, lambda rng: rng.choice([-1, 1], num_signs))
    out = np.empty_like(x)
    for key in np.unique(signs, axis=0):
        idx = np.nonzero((signs == key).all(axis=1))[0]
        out[idx] = make(x[idx], key)
    return out


def _affine(rotation=0.0, shear=0.0, scale=1.0) -> np.ndarray:
    # skimage (<= 0.19, which MNIST-C used) AffineTransform's linear part in (x, y).
    return np.array([[scale * np.cos(rotation), -scale * np.sin(rotation + shear)],
                     [scale * np.sin(rotation), scale * np.cos(rotation + shear)]])


def _rotate(x, s, seed):
    # mnist-c corruptions.py rotate: +-c radians about the centre.
    c = [0.2, 0.4, 0.6, 0.8, 1.][s]
    return _grouped(x, seed, 1, lambda xs, sign: _warp(xs, _affine(rotation=c * sign[0])))


def _shear(x, s, seed):
    # mnist-c corruptions.py shear: skimage shear angle +-c about the centre.
    c = [0.2, 0.4, 0.6, 0.8, 1.][s]
    return _grouped(x, seed, 1, lambda xs, sign: _warp(xs, _affine(shear=c * sign[0])))


def _scale(x, s, seed):
    # mnist-c corruptions.py scale: inverse scale 1/c about the centre, i.e. the content
    # shrinks to c of its size (no random direction).
    c = [.9, .8, .7, .6, .5][s]
    return _warp(x, _affine(scale=1.0 / c))


def _translate(x, s, seed):
    # mnist-c corruptions.py translate: shift by c px on each axis, random signs. c is in
    # 28 px units, rescaled to the image size and rounded to whole pixels (>= 1) so the
    # shift stays a crisp copy as in MNIST-C.
    c = [1, 2, 3, 4, 5][s]
    hgt, wid = x.shape[1:3]
    dx = max(1, round(c * wid / _MNIST_SIZE))
    dy = max(1, round(c * hgt / _MNIST_SIZE))
    return _grouped(x, seed, 2, lambda xs, sign: _warp(
        xs, np.eye(2), shift_xy=(dx * sign[0], dy * sign[1])))


_FUNCTIONS = {
    'gaussian_noise': _gaussian_noise, 'shot_noise': _shot_noise,
    'impulse_noise': _impulse_noise, 'speckle_noise': _speckle_noise,
    'gaussian_blur': _gaussian_blur, 'glass_blur': _glass_blur,
    'motion_blur': _motion_blur, 'defocus_blur': _defocus_blur, 'zoom_blur': _zoom_blur,
    'brightness': _brightness, 'contrast': _contrast, 'saturate': _saturate,
    'pixelate': _pixelate, 'jpeg_compression': _jpeg_compression,
    'rotate': _rotate, 'scale': _scale, 'shear': _shear, 'translate': _translate,
}
assert tuple(_FUNCTIONS) == CORRUPTIONS
