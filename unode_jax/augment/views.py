"""SimCLR-style positive views, computed on device, one sample at a time.

Every function takes one image (H, W, 3) float32 in [0, 1] and returns the
same shape, dtype and range. They are pure and free of Python control flow
on traced values, so they can be `jax.vmap`-ed over (key, image) and used
inside a jitted train step; `random_views` is that vmap.

The pipeline follows the CSI / UNODE PyTorch code:
RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter (p=0.8) ->
RandomGrayscale (p=0.2), with torchvision's semantics for each op.
"""

import math

import dm_pix as pix
import jax
import jax.numpy as jnp

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def grayscale(image):
    """Luma of an (H, W, 3) image as (H, W, 1)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)[..., None]


def random_resized_crop(key, image, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        area=None):
    """Crops a random box and resizes it back to the input size (bilinear).

    The box has area fraction ~ U(scale) (or exactly `area` when given) and
    log-aspect ~ U(log ratio). torchvision retries up to 10 times to find a box
    that fits and then falls back to a centre crop; with static shapes we
    instead clip width and height to the image, which only differs for extreme
    draws (large area with an extreme aspect ratio). The box is continuous
    (sub-pixel) rather than rounded to integers.
    """
    h, w = image.shape[0], image.shape[1]
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    if area is None:
        frac = jax.random.uniform(k_area, minval=scale[0], maxval=scale[1])
    else:
        frac = jnp.float32(area)
    log_r = jax.random.uniform(
        k_ratio, minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    aspect = jnp.exp(log_r)  # width / height
    crop_area = frac * (h * w)
    cw = jnp.clip(jnp.sqrt(crop_area * aspect), 1.0, w)
    ch = jnp.clip(jnp.sqrt(crop_area / aspect), 1.0, h)
    y0 = jax.random.uniform(k_y) * (h - ch)
    x0 = jax.random.uniform(k_x) * (w - cw)
    # scale_and_translate maps input coordinate c to c * s + t; the box
    # [y0, y0 + ch] must land on [0, h].
    s = jnp.stack([h / ch, w / cw])
    t = -jnp.stack([y0, x0]) * s
    # The box lies inside the image and s >= 1 (upsampling), so neither the
    # zero fill outside the input nor antialiasing ever comes into play.
    out = jax.image.scale_and_translate(
        image, image.shape, (0, 1), s, t, method='linear', antialias=False)
    return jnp.clip(out, 0.0, 1.0)


def random_flip(key, image):
    """Horizontal flip with probability 0.5."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def random_shift(key, image, max_shift, *, flip=False):
    """The image moved by whole pixels dy, dx ~ U{-max_shift..max_shift}, reflected at the
    border (so no pixel is invented), then flipped horizontally with p = 0.5 when flip:
    a test-time view that keeps the whole object, its colours and its scale."""
    k_y, k_x, k_flip = jax.random.split(key, 3)
    h, w = image.shape[0], image.shape[1]
    padded = jnp.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                     mode='reflect')
    dy = jax.random.randint(k_y, (), 0, 2 * max_shift + 1)
    dx = jax.random.randint(k_x, (), 0, 2 * max_shift + 1)
    out = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, image.shape[2]))
    return random_flip(k_flip, out) if flip else out


def _blend(a, b, factor):
    # torchvision's _blend: factor * a + (1 - factor) * b, clamped.
    return jnp.clip(factor * a + (1.0 - factor) * b, 0.0, 1.0)


def color_jitter(key, image, *, brightness=0.4, contrast=0.4, saturation=0.4,
                 hue=0.1):
    """torchvision ColorJitter: the four adjustments in a random order.

    brightness/contrast/saturation factors ~ U(max(0, 1 - v), 1 + v) and the
    hue shift ~ U(-hue, hue) (in turns, as torchvision's hue_factor).
    """
    k_perm, k_b, k_c, k_s, k_h = jax.random.split(key, 5)

    def factor(k, v):
        return jax.random.uniform(k, minval=max(0.0, 1.0 - v), maxval=1.0 + v)

    fb, fc, fs = factor(k_b, brightness), factor(k_c, contrast), factor(k_s, saturation)
    dh = jax.random.uniform(k_h, minval=-hue, maxval=hue)

    ops = (
        lambda x: jnp.clip(x * fb, 0.0, 1.0),
        lambda x: _blend(x, jnp.mean(grayscale(x)), fc),
        lambda x: _blend(x, grayscale(x), fs),
        lambda x: jnp.clip(pix.adjust_hue(x, dh), 0.0, 1.0),
    )
    perm = jax.random.permutation(k_perm, len(ops))
    # Under vmap the per-sample branch index turns switch into select, so all
    # four ops run at every stage; they are elementwise and cheap.
    return jax.lax.fori_loop(
        0, len(ops), lambda i, x: jax.lax.switch(perm[i], ops, x), image)


def random_view(key, image, *, flip=True, crop_scale=(0.08, 1.0),
                crop_ratio=(3 / 4, 4 / 3), jitter=(0.4, 0.4, 0.4, 0.1),
                jitter_p=0.8, gray_p=0.2, crop_area=None):
    """One random view of one image (H, W, 3) float32 in [0,1] -> same shape.

    Args:
      key: PRNG key.
      image: (H, W, 3) float32 in [0, 1].
      flip: random horizontal flip with p=0.5 (disable for digits).
      crop_scale: range of the crop's area fraction.
      crop_ratio: range of the crop's aspect ratio (width / height).
      jitter: (brightness, contrast, saturation, hue) strengths.
      jitter_p: probability of applying colour jitter.
      gray_p: probability of converting to grayscale.
      crop_area: fixed area fraction overriding `crop_scale` (e.g. 0.54 for the
        test-time ensemble); the aspect ratio stays random.

    Returns:
      (H, W, 3) float32 in [0, 1].
    """
    image = jnp.asarray(image, jnp.float32)
    k_crop, k_flip, k_jit, k_jit_p, k_gray = jax.random.split(key, 5)
    x = random_resized_crop(
        k_crop, image, scale=crop_scale, ratio=crop_ratio, area=crop_area)
    if flip:
        x = random_flip(k_flip, x)
    b, c, s, h = jitter
    x = jnp.where(jax.random.bernoulli(k_jit_p, jitter_p),
                  color_jitter(k_jit, x, brightness=b, contrast=c,
                               saturation=s, hue=h), x)
    x = jnp.where(jax.random.bernoulli(k_gray, gray_p),
                  jnp.broadcast_to(grayscale(x), x.shape), x)
    return jnp.clip(x, 0.0, 1.0).astype(jnp.float32)


def random_views(keys, images, **kw):
    """`random_view` over a batch: keys (B, 2) or (B,) typed, images (B,H,W,3)."""
    return jax.vmap(lambda k, x: random_view(k, x, **kw))(keys, images)
