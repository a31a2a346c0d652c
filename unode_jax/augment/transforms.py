"""The hard transforms that make negatives from inliers (sec. 3.1): each maps
(key, x, partner) -> x', keeps shape and dtype, and clips to [0, 1]; parameters are
static keyword arguments (`negative_batch(params=...)` overrides them). negatives.py
weighs and composes them."""
import functools
import math

import dm_pix as pix
import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from unode_jax.augment.views import grayscale

TRANSFORMS = ('rotation', 'cutperm', 'gaussian_noise', 'cutout', 'cutpaste',
              'sobel', 'blur', 'mixup', 'elastic')


def _clip(x):
    return jnp.clip(x, 0.0, 1.0).astype(jnp.float32)


def _gaussian_blur(x, sigma, radius):
    """Gaussian blur of (H, W, C) with reflect padding and a static radius.

    dm_pix builds the kernel from `sigma` with jnp ops, so a traced sigma is
    fine as long as the kernel size is static. We pad by reflection ourselves
    and convolve 'VALID', because dm_pix's 'SAME' zero-pads and would darken
    the borders.
    """
    radius = int(min(radius, x.shape[0] - 1, x.shape[1] - 1))
    if radius <= 0:
        return x
    xp = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode='reflect')
    return pix.gaussian_blur(xp, sigma, 2 * radius + 1, padding='VALID')


def _box_mask(shape, y0, x0, h, w):
    """(H, W) bool, True on rows [y0, y0+h) x cols [x0, x0+w)."""
    rows = jnp.arange(shape[0])[:, None]
    cols = jnp.arange(shape[1])[None, :]
    return (rows >= y0) & (rows < y0 + h) & (cols >= x0) & (cols < x0 + w)


def _sample(x, rows, cols, order=1):
    """Samples (H, W, C) at float coordinates (H', W'), edge-replicating."""
    return jnp.stack([
        ndimage.map_coordinates(x[..., c], (rows, cols), order=order,
                                mode='nearest') for c in range(x.shape[-1])
    ], axis=-1)


# ----------------------------------------------------------------------------
# Transforms.
# ----------------------------------------------------------------------------


def rotation(key, x, partner):
    """Rotation by 90, 180 or 270 degrees (k ~ U{1,2,3}), exact.

    Same direction as np.rot90(x, k) (counter-clockwise). Requires a square
    image: raises ValueError at trace time otherwise, so drop 'rotation' from
    `names` for non-square data.
    """
    del partner
    if x.shape[0] != x.shape[1]:
        raise ValueError(f'rotation needs a square image, got {x.shape}.')
    k = jax.random.randint(key, (), 0, 3)
    branches = [functools.partial(jnp.rot90, k=i) for i in (1, 2, 3)]
    return _clip(jax.lax.switch(k, branches, x))


def _cutperm(x, k):
    h, w = x.shape[0], x.shape[1]
    if k // 2:  # swap top and bottom halves
        x = jnp.concatenate([x[h // 2:], x[:h // 2]], axis=0)
    if k % 2:  # swap left and right halves
        x = jnp.concatenate([x[:, w // 2:], x[:, :w // 2]], axis=1)
    return x


def cutperm(key, x, partner):
    """Permutes image halves (CSI's CutPerm), k ~ U{1,2,3}.

    k=1 swaps left/right, k=2 swaps top/bottom, k=3 both. For odd sizes the
    first half is the smaller one (h // 2 rows), as in the PyTorch code.
    """
    del partner
    k = jax.random.randint(key, (), 0, 3)
    branches = [functools.partial(_cutperm, k=i) for i in (1, 2, 3)]
    return _clip(jax.lax.switch(k, branches, x))


def gaussian_noise(key, x, partner, *, sigma=0.1):
    """x + N(0, sigma^2) i.i.d. per pixel and channel, clipped. sigma=0.1."""
    del partner
    return _clip(x + sigma * jax.random.normal(key, x.shape, jnp.float32))


def cutout_bounds(size, size_range=(1 / 6, 1 / 4)):
    """Inclusive integer bounds [lo, hi] of a cutout side for an image side.

    lo = max(1, ceil(size * size_range[0])), hi = max(lo, floor(size *
    size_range[1])): the integers inside [size/6, size/4] by default (the
    PyTorch code uses randint(size // 6, size // 4), which excludes size // 4).
    """
    lo = max(1, math.ceil(size * size_range[0] - 1e-9))
    hi = max(lo, math.floor(size * size_range[1] + 1e-9))
    return lo, min(hi, size)


def cutout(key, x, partner, *, size_range=(1 / 6, 1 / 4)):
    """Zeroes one h x w rectangle fully inside the image.

    h and w are uniform integers in `cutout_bounds(H)` / `cutout_bounds(W)`
    (inclusive); the position is uniform over all placements that fit.
    """
    del partner
    hh, ww = x.shape[0], x.shape[1]
    k_h, k_w, k_y, k_x = jax.random.split(key, 4)
    lo_h, hi_h = cutout_bounds(hh, size_range)
    lo_w, hi_w = cutout_bounds(ww, size_range)
    h = jax.random.randint(k_h, (), lo_h, hi_h + 1)
    w = jax.random.randint(k_w, (), lo_w, hi_w + 1)
    y0 = jax.random.randint(k_y, (), 0, hh - h + 1)
    x0 = jax.random.randint(k_x, (), 0, ww - w + 1)
    m = _box_mask(x.shape, y0, x0, h, w)
    return _clip(jnp.where(m[..., None], 0.0, x))


def cutpaste(key, x, partner, *, scar_p=0.5, normal_frac=(0.1, 0.35),
             scar_width=(3.0, 0.15), scar_height=(10.0, 0.4),
             angle_range=(0.0, 360.0)):
    """CutPaste: copies a patch of the image onto another place of itself.

    With probability 1 - scar_p a "normal" patch: height = round(u_h * H) and
    width = round(u_w * W) with u_h, u_w ~ U(normal_frac) independently. Else
    a "scar": width ~ U(scar_width[0], scar_width[1] * W) px and height ~
    U(scar_height[0], scar_height[1] * H) px, rounded (an upper bound below the
    lower one is raised to it). Sides are capped to [1, image side].

    The source and destination corners are uniform over placements that fit.
    The pasted patch and its mask are then rotated together by an angle ~
    U(angle_range) degrees about the image centre, as the authors' code does;
    we do it by inverse-mapping every output pixel (bilinear on the source,
    nearest on the mask), so shapes stay static. Output: x*(1-m) + pasted*m.
    Rotating about the image centre can carry a patch near a corner out of
    the frame, leaving x unchanged (about 0.1% of draws at 16 to 64 px).
    """
    del partner
    hh, ww = x.shape[0], x.shape[1]
    ks = jax.random.split(key, 10)

    def side(k, lo, hi):
        return jnp.round(jax.random.uniform(k, minval=lo, maxval=max(lo, hi)))

    is_scar = jax.random.bernoulli(ks[0], scar_p)
    ph = jnp.where(is_scar,
                   side(ks[1], scar_height[0], scar_height[1] * hh),
                   side(ks[2], normal_frac[0] * hh, normal_frac[1] * hh))
    pw = jnp.where(is_scar,
                   side(ks[3], scar_width[0], scar_width[1] * ww),
                   side(ks[4], normal_frac[0] * ww, normal_frac[1] * ww))
    ph = jnp.clip(ph, 1, hh).astype(jnp.int32)
    pw = jnp.clip(pw, 1, ww).astype(jnp.int32)
    sy = jax.random.randint(ks[5], (), 0, hh - ph + 1)
    sx = jax.random.randint(ks[6], (), 0, ww - pw + 1)
    dy = jax.random.randint(ks[7], (), 0, hh - ph + 1)
    dx = jax.random.randint(ks[8], (), 0, ww - pw + 1)
    theta = jnp.deg2rad(jax.random.uniform(
        ks[9], minval=angle_range[0], maxval=angle_range[1]))

    # Inverse rotation of output pixel centres into the un-rotated canvas.
    cy, cx = (hh - 1) / 2.0, (ww - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(hh, dtype=jnp.float32) - cy,
                          jnp.arange(ww, dtype=jnp.float32) - cx, indexing='ij')
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    u = cy + cos * yy - sin * xx
    v = cx + sin * yy + cos * xx
    ui, vi = jnp.round(u), jnp.round(v)
    m = (ui >= dy) & (ui < dy + ph) & (vi >= dx) & (vi < dx + pw)
    pasted = _sample(x, u - dy + sy, v - dx + sx)
    return _clip(jnp.where(m[..., None], pasted, x))


def sobel(key, x, partner):
    """Sobel gradient magnitude of the luma, scaled to [0, 1] per image.

    Deterministic (the key is unused). Edge padding, so a constant image maps
    to all zeros; the max is guarded so it never divides by zero.
    """
    del key, partner
    p = jnp.pad(grayscale(x)[..., 0], 1, mode='edge')
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]
          - p[:-2, :-2] - 2 * p[1:-1, :-2] - p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]
          - p[:-2, :-2] - 2 * p[:-2, 1:-1] - p[:-2, 2:])
    mag = jnp.sqrt(gx * gx + gy * gy)
    mag = mag / jnp.maximum(jnp.max(mag), 1e-6)
    return _clip(jnp.broadcast_to(mag[..., None], x.shape))


def blur(key, x, partner, *, sigma_range=(1.0, 2.0), truncate=3.0):
    """Gaussian blur with sigma ~ U(sigma_range) px (default 1 to 2).

    The kernel radius is static, ceil(truncate * sigma_range[1]) (6 px by
    default, capped to the image), with reflect padding.
    """
    del partner
    sigma = jax.random.uniform(key, minval=sigma_range[0], maxval=sigma_range[1])
    radius = math.ceil(truncate * sigma_range[1])
    return _clip(_gaussian_blur(x, sigma, radius))


def mixup(key, x, partner, *, lam_range=(0.3, 0.7)):
    """lam * x + (1 - lam) * partner with lam ~ U(lam_range).

    The default (0.3, 0.7) mixes two inliers into a hard negative. The
    authors' outlier-exposure setting mixes in an external image with a small
    weight: pass that image as `partner` and lam_range=(0.02, 0.1).
    """
    lam = jax.random.uniform(key, minval=lam_range[0], maxval=lam_range[1])
    return _clip(lam * x + (1.0 - lam) * partner)


def elastic(key, x, partner, *, alpha=None, sigma=None, truncate=3.0):
    """Elastic deformation (Simard et al. 2003).

    The displacement (in px) of each axis is U(-1, 1) noise per pixel,
    smoothed by a Gaussian of std `sigma` px and multiplied by `alpha`; the
    image is resampled bilinearly at the displaced coordinates, edge pixels
    replicated. Defaults scale with s = min(H, W) / 32: sigma = 4 * s and
    alpha = 34 * s**2 (Simard's MNIST values at 32 px), which gives a
    displacement std of about 1.6 * s px with a correlation length of sigma.
    torchvision's ElasticTransform(alpha=a, sigma=g), used by the authors with
    a=200, g=7, corresponds to alpha = a / 2, sigma = g here on square images
    (torchvision scales by a / size in [-1, 1] grid units, i.e. a / 2 px).
    """
    del partner
    hh, ww = x.shape[0], x.shape[1]
    s = min(hh, ww) / 32.0
    sigma = 4.0 * s if sigma is None else float(sigma)
    alpha = 34.0 * s * s if alpha is None else float(alpha)
    noise = jax.random.uniform(key, (hh, ww, 2), minval=-1.0, maxval=1.0)
    disp = alpha * _gaussian_blur(noise, sigma, math.ceil(truncate * sigma))
    yy, xx = jnp.meshgrid(jnp.arange(hh, dtype=jnp.float32),
                          jnp.arange(ww, dtype=jnp.float32), indexing='ij')
    return _clip(_sample(x, yy + disp[..., 0], xx + disp[..., 1]))


TRANSFORM_FNS = {
    'rotation': rotation,
    'cutperm': cutperm,
    'gaussian_noise': gaussian_noise,
    'cutout': cutout,
    'cutpaste': cutpaste,
    'sobel': sobel,
    'blur': blur,
    'mixup': mixup,
    'elastic': elastic,
}
assert tuple(TRANSFORM_FNS) == TRANSFORMS


def transform_branches(names, params):
    """Transform functions for `names` with static overrides from `params`."""
    params = params or {}
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(f'params for transforms not in names: {sorted(unknown)}')
    return [functools.partial(TRANSFORM_FNS[n], **params.get(n, {}))
            for n in names]
