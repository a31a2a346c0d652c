"""Tests for unode_jax.augment.views and unode_jax.augment.negatives."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from unode_jax.configs import default as default_config
from unode_jax.augment import negatives, transforms, views

S = 16  # image side used by most tests
B = 4  # batch size for negative_batch


def _image(seed, size=S):
    return jax.random.uniform(jax.random.key(seed), (size, size, 3))


def _keys(seed, n):
    return jax.random.split(jax.random.key(seed), n)


def _check_image(y, shape):
    y = np.asarray(y)
    assert y.shape == shape
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert y.min() >= 0.0 and y.max() <= 1.0


# ----------------------------------------------------------------------------
# Each transform.
# ----------------------------------------------------------------------------


@functools.cache
def _vmapped(name, **params):
    fn = functools.partial(transforms.TRANSFORM_FNS[name], **params)
    return jax.jit(jax.vmap(fn, in_axes=(0, None, None)))


def test_transform_registry():
    assert tuple(transforms.TRANSFORM_FNS) == negatives.TRANSFORMS


@pytest.mark.parametrize('name', negatives.TRANSFORMS)
def test_transform_shape_range_and_keys(name):
    x, p = _image(0), _image(1)
    # Keys 0 and 1 are equal, the rest differ.
    keys = _keys(2, 7)
    keys = jnp.concatenate([keys[:1], keys])
    y = np.asarray(_vmapped(name)(keys, x, p))
    _check_image(y, (8, S, S, 3))
    np.testing.assert_array_equal(y[0], y[1])
    n_distinct = len({y[i].tobytes() for i in range(1, 8)})
    if name == 'sobel':  # deterministic
        assert n_distinct == 1
    else:
        assert n_distinct > 1
    # cutpaste can rarely rotate its patch out of the frame, so ask for any.
    assert any(not np.array_equal(yi, np.asarray(x)) for yi in y)


def test_rotation_exact_and_all_k():
    x = np.asarray(_image(3))
    y = np.asarray(_vmapped('rotation')(_keys(4, 64), x, x))
    ks = []
    for yi in y:
        match = [k for k in (1, 2, 3) if np.array_equal(yi, np.rot90(x, k))]
        assert len(match) == 1
        ks.append(match[0])
    assert set(ks) == {1, 2, 3}


def test_rotation_requires_square():
    x = jnp.zeros((8, 12, 3))
    with pytest.raises(ValueError):
        transforms.rotation(jax.random.key(0), x, x)


def test_cutperm_is_a_half_permutation():
    x = np.asarray(_image(5))
    h = S // 2
    lr = np.concatenate([x[:, h:], x[:, :h]], axis=1)
    tb = np.concatenate([x[h:], x[:h]], axis=0)
    both = np.concatenate([tb[:, h:], tb[:, :h]], axis=1)
    y = np.asarray(_vmapped('cutperm')(_keys(6, 32), x, x))
    seen = set()
    for yi in y:
        match = [i for i, c in enumerate((lr, tb, both)) if np.array_equal(yi, c)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {0, 1, 2}


def test_cutout_is_one_rectangle_of_bounded_size():
    size = 24
    lo, hi = transforms.cutout_bounds(size)
    assert (lo, hi) == (4, 6)  # ceil(24/6), floor(24/4)
    ones = jnp.ones((size, size, 3))
    y = np.asarray(jax.jit(jax.vmap(transforms.cutout, in_axes=(0, None, None)))(
        _keys(7, 32), ones, ones))
    sizes = set()
    for yi in y:
        zero = yi[..., 0] == 0
        assert np.array_equal(zero, np.all(yi == 0, axis=-1))
        rows = np.flatnonzero(zero.any(axis=1))
        cols = np.flatnonzero(zero.any(axis=0))
        h, w = len(rows), len(cols)
        assert lo <= h <= hi and lo <= w <= hi
        assert zero.sum() == h * w
        # Contiguous and full: the zeros are exactly the bounding box.
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        assert zero[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert np.all(yi[~zero] == 1.0)
        sizes.add((h, w))
    assert len(sizes) > 1


def test_cutpaste_changes_some_pixels_and_keeps_others():
    x = _image(8)
    y = np.asarray(_vmapped('cutpaste')(_keys(9, 8), x, x))
    changed = np.any(y != np.asarray(x), axis=-1).sum(axis=(1, 2))
    # A patch near a corner can rotate out of the frame (~0.1% at 16 px).
    assert np.sum(changed > 0) >= 7
    assert np.all(changed < S * S // 2)


def test_cutpaste_without_rotation_copies_a_patch():
    x = np.asarray(_image(10))
    y = np.asarray(_vmapped('cutpaste', angle_range=(0.0, 0.0))(
        _keys(11, 8), x, x))
    for yi in y:
        changed = np.any(yi != x, axis=-1)
        rows = np.flatnonzero(changed.any(axis=1))
        cols = np.flatnonzero(changed.any(axis=0))
        # Every changed pixel lies in one box, and its values occur in x.
        patch = yi[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert np.isin(patch, x).all()


def test_sobel_of_constant_is_zero():
    c = jnp.full((S, S, 3), 0.37)
    fn = jax.jit(transforms.sobel)
    np.testing.assert_array_equal(np.asarray(fn(jax.random.key(0), c, c)), 0.0)
    step = jnp.zeros((S, S, 3)).at[:, S // 2:].set(1.0)
    y = np.asarray(fn(jax.random.key(0), step, step))
    assert y.max() == pytest.approx(1.0)
    assert np.all(y[:, :S // 2 - 1] == 0) and np.all(y[:, S // 2 + 1:] == 0)


def test_mixup_is_a_convex_combination():
    x, p = np.asarray(_image(12)), np.asarray(_image(13))
    y = np.asarray(_vmapped('mixup')(_keys(14, 16), x, p))
    d = (x - p).ravel()
    for yi in y:
        lam = np.dot((yi - p).ravel(), d) / np.dot(d, d)
        assert 0.3 <= lam <= 0.7
        np.testing.assert_allclose(yi, lam * x + (1 - lam) * p, atol=1e-5)


def test_gaussian_noise_std():
    x = jnp.full((32, 32, 3), 0.5)
    y = np.asarray(transforms.gaussian_noise(jax.random.key(0), x, x))
    assert abs((y - 0.5).std() - 0.1) < 0.01


def test_blur_and_elastic_keep_constants():
    c = jnp.full((S, S, 3), 0.6)
    for name in ('blur', 'elastic'):
        y = np.asarray(transforms.TRANSFORM_FNS[name](jax.random.key(0), c, c))
        np.testing.assert_allclose(y, 0.6, atol=1e-5)


# ----------------------------------------------------------------------------
# Positive views.
# ----------------------------------------------------------------------------


def test_random_views_shape_range_and_keys():
    x = _image(15)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)  # raw (B, 2) keys
    keys = jnp.concatenate([keys[:1], keys])
    images = jnp.broadcast_to(x, (4,) + x.shape)
    y = np.asarray(jax.jit(views.random_views)(keys, images))
    _check_image(y, (4, S, S, 3))
    np.testing.assert_array_equal(y[0], y[1])
    assert not np.array_equal(y[1], y[2])


def test_random_view_identity_config():
    x = _image(16, size=20)
    y = jax.jit(functools.partial(
        views.random_view, flip=False, crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0), jitter_p=0.0, gray_p=0.0))(jax.random.key(1), x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5)


def test_random_view_grayscale_and_fixed_area():
    x = _image(17)
    fn = jax.jit(jax.vmap(functools.partial(
        views.random_view, gray_p=1.0, crop_area=0.54), in_axes=(0, None)))
    y = np.asarray(fn(_keys(18, 4), x))
    _check_image(y, (4, S, S, 3))
    np.testing.assert_allclose(y[..., 0], y[..., 1], atol=1e-6)
    np.testing.assert_allclose(y[..., 0], y[..., 2], atol=1e-6)


def test_color_jitter_identity_and_range():
    x = _image(19)
    y = views.color_jitter(jax.random.key(0), x, brightness=0.0, contrast=0.0,
                           saturation=0.0, hue=0.0)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5)


# ----------------------------------------------------------------------------
# Composition.
# ----------------------------------------------------------------------------

K = len(negatives.TRANSFORMS)


def test_sample_composition_skips_zero_weights():
    w = jnp.array([0.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.0, 0.0])
    order, r = jax.jit(jax.vmap(
        lambda k: negatives.sample_composition(k, w, 3)))(_keys(20, 500))
    order, r = np.asarray(order), np.asarray(r)
    assert order.dtype == np.int32 and r.dtype == np.int32
    assert np.all(np.sort(order, axis=1) == np.arange(K))
    assert r.min() == 1 and r.max() == 3  # min(max_compose, 4 nonzero)
    wn = np.asarray(w)
    for o, ri in zip(order, r):
        assert np.all(wn[o[:ri]] > 0)
        assert np.all(wn[o[:4]] > 0)  # nonzero weights come first


def test_sample_composition_frequencies_follow_weights():
    w = np.array([4.0, 3.0, 2.0, 1.0, 0, 0, 0, 0, 0])
    n = 4000
    order, _ = jax.jit(jax.vmap(
        lambda k: negatives.sample_composition(k, w, K)))(_keys(21, n))
    order = np.asarray(order)
    p = w / w.sum()
    first = np.bincount(order[:, 0], minlength=K) / n
    np.testing.assert_allclose(first, p, atol=0.03)
    # Second draw without replacement: sum_i p_i * w_j / (S - w_i), j != i.
    second_expected = np.array([
        sum(p[i] * w[j] / (w.sum() - w[i]) for i in range(K) if i != j)
        for j in range(K)])
    second = np.bincount(order[:, 1], minlength=K) / n
    np.testing.assert_allclose(second, second_expected, atol=0.03)


def test_compose_follows_the_notation_and_is_identity_after_r():
    """s_sigma1 o s_sigma2 (x) = s_sigma1(s_sigma2(x)): the last drawn transform runs first."""
    names = ('cutout', 'gaussian_noise', 'blur')
    x, key = _image(22), jax.random.key(23)
    fn = jax.jit(functools.partial(negatives.compose, names=names))
    order = jnp.array([0, 1, 2], jnp.int32)  # sigma1 = cutout, sigma2 = gaussian_noise
    cut = transforms.cutout(jax.random.fold_in(key, 0), x, x)
    np.testing.assert_array_equal(np.asarray(fn(key, x, x, order, 1)), cut)
    noisy = transforms.gaussian_noise(jax.random.fold_in(key, 0), x, x)
    both = transforms.cutout(jax.random.fold_in(key, 1), noisy, x)
    got = np.asarray(fn(key, x, x, order, 2))
    np.testing.assert_allclose(got, both, atol=1e-6)  # jit and eager round the noise apart
    # Not the other order: noise after the cut would fill the cut-out patch.
    other = transforms.gaussian_noise(jax.random.fold_in(key, 1), cut, x)
    assert np.abs(got - np.asarray(other)).max() > 0.1


def _batch():
    images = jax.random.uniform(jax.random.key(24), (B, S, S, 3))
    return images, jnp.roll(images, 1, axis=0)


@functools.cache
def _negative_fn(mode, per):
    # weights is a traced argument, so one compilation serves all weights.
    return jax.jit(functools.partial(negatives.negative_batch, mode=mode,
                                     per=per, max_compose=2))


MODES = [('compose', 'batch'), ('compose', 'sample'), ('single', 'batch')]


@pytest.mark.slow
@pytest.mark.parametrize('mode,per', MODES)
def test_negative_batch_jits_and_is_deterministic(mode, per):
    images, partners = _batch()
    w = jnp.ones((K,))
    fn = _negative_fn(mode, per)
    sk = _keys(25, B)
    y1 = np.asarray(fn(jax.random.key(26), sk, images, partners, w))
    y2 = np.asarray(fn(jax.random.key(26), sk, images, partners, w))
    _check_image(y1, (B, S, S, 3))
    np.testing.assert_array_equal(y1, y2)
    y3 = np.asarray(fn(jax.random.key(27), _keys(28, B), images, partners, w))
    assert not np.array_equal(y1, y3)


@pytest.mark.parametrize('mode,per', MODES)
@pytest.mark.parametrize('name', ['cutout', 'mixup'])
def test_negative_batch_one_hot_weights(mode, per, name):
    images, partners = _batch()
    idx = negatives.TRANSFORMS.index(name)
    w = jnp.zeros((K,)).at[idx].set(0.7)
    sk = _keys(29, B)
    y = np.asarray(_negative_fn(mode, per)(
        jax.random.key(30), sk, images, partners, w))
    if mode == 'single':
        stage_keys = jax.vmap(lambda k: jax.random.split(k)[1])(sk)
    elif per == 'batch':
        stage_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(sk)
    else:
        stage_keys = jax.vmap(
            lambda k: jax.random.fold_in(jax.random.split(k)[1], 0))(sk)
    expected = jax.vmap(transforms.TRANSFORM_FNS[name])(
        stage_keys, images, partners)
    np.testing.assert_allclose(y, np.asarray(expected), atol=1e-6)


def test_negative_batch_rejects_bad_weights_and_options():
    images, partners = _batch()
    args = (jax.random.key(0), _keys(1, B), images, partners)
    with pytest.raises(ValueError):
        negatives.negative_batch(*args, np.zeros(K))
    with pytest.raises(ValueError):
        negatives.negative_batch(*args, np.ones(K - 1))
    with pytest.raises(ValueError):
        negatives.negative_batch(*args, np.ones(K), mode='bogus')
    with pytest.raises(ValueError):
        negatives.negative_batch(*args, np.ones(K), per='bogus')


# ----------------------------------------------------------------------------
# Statistics of the views and negatives that training draws (issue: catch a
# wrong method). Seeded, with binomial (5 sd) or KS (p > 1e-3) tolerances.
# ----------------------------------------------------------------------------

DEFAULT = default_config.get_config()


def _view_kw(**overrides):
    """random_views keywords built from config.views as train.make_batch does."""
    v = DEFAULT.views
    kw = dict(flip=v.flip, crop_scale=tuple(v.crop_scale),
              crop_ratio=tuple(v.crop_ratio), jitter=tuple(v.jitter),
              jitter_p=v.jitter_p, gray_p=v.gray_p)
    kw.update(overrides)
    return kw


def _views(seed, image, n, **overrides):
    fn = jax.jit(functools.partial(views.random_views, **_view_kw(**overrides)))
    images = jnp.broadcast_to(jnp.asarray(image), (n,) + image.shape)
    return np.asarray(fn(_keys(seed, n), images))


def _ramp_image(h, w):
    """Channel 0 = column / (w - 1), channel 1 = row / (h - 1), channel 2 = 0.5."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    return np.stack([cols / (w - 1), rows / (h - 1), np.full((h, w), 0.5)],
                    axis=-1).astype(np.float32)


def _crop_boxes(y, h, w):
    """(x0, y0, cw, ch) in input pixels of each crop of `_ramp_image(h, w)`.

    Output pixel (i, j) samples the box at input column x0 + (j + 1/2) cw / w - 1/2
    (and likewise rows), so the ramps are linear in j and i away from the border
    (where bilinear resizing clamps to the edge pixel). Asserts that model on the
    central half of the image, so the output is a resized axis-aligned box.
    """
    xr = y[..., 0].astype(np.float64) * (w - 1)
    yr = y[..., 1].astype(np.float64) * (h - 1)
    j1, j2, i1, i2 = w // 4, 3 * w // 4, h // 4, 3 * h // 4
    cw = (xr[:, h // 2, j2] - xr[:, h // 2, j1]) / (j2 - j1) * w
    ch = (yr[:, i2, w // 2] - yr[:, i1, w // 2]) / (i2 - i1) * h
    x0 = xr[:, h // 2, j1] + 0.5 - (j1 + 0.5) * cw / w
    y0 = yr[:, i1, w // 2] + 0.5 - (i1 + 0.5) * ch / h
    cols, rows = np.arange(j1, j2 + 1), np.arange(i1, i2 + 1)
    model_x = x0[:, None] + (cols + 0.5) * cw[:, None] / w - 0.5
    model_y = y0[:, None] + (rows + 0.5) * ch[:, None] / h - 0.5
    np.testing.assert_allclose(
        xr[:, i1:i2 + 1, j1:j2 + 1], np.broadcast_to(
            model_x[:, None, :], (len(y), len(rows), len(cols))), atol=1e-3)
    np.testing.assert_allclose(
        yr[:, i1:i2 + 1, j1:j2 + 1], np.broadcast_to(
            model_y[:, :, None], (len(y), len(rows), len(cols))), atol=1e-3)
    return x0, y0, cw, ch


def _ks_uniform(u):
    """p-value of a one-sample KS test of u against U(0, 1)."""
    return scipy.stats.kstest(u, 'uniform').pvalue


def _near_rate(hits, p):
    """The fraction of True in hits is within 5 binomial sd of p."""
    n = np.size(hits)
    return abs(np.mean(hits) - p) <= 5 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize('h,w,scale,ratio', [
    # The default config (training's crop) on a 32 x 32 image: the width or the
    # height is clipped to the image only when area * aspect > 1 or area / aspect
    # > 1, i.e. area > 3/4, and the clipped crop's area is then > 3/4 too; the
    # draws with area <= 1/2 are unclipped.
    (32, 32, None, None),
    # Tall crops (width / height < 1) of a portrait image, never clipped: would
    # catch height / width used as the aspect ratio.
    (32, 24, (0.25, 0.5), (0.5, 1.0)),
])
def test_random_views_crop_area_and_aspect_ratio(h, w, scale, ratio):
    scale = tuple(DEFAULT.views.crop_scale) if scale is None else scale
    ratio = tuple(DEFAULT.views.crop_ratio) if ratio is None else ratio
    n = 3000
    y = _views(31, _ramp_image(h, w), n, flip=False, crop_scale=scale,
               crop_ratio=ratio, jitter_p=0.0, gray_p=0.0)
    x0, y0, cw, ch = _crop_boxes(y, h, w)
    area, aspect = cw * ch / (h * w), cw / ch
    tol = 1e-3
    # Every box lies inside the image, within the configured ranges...
    assert x0.min() >= -tol and (x0 + cw).max() <= w + tol
    assert y0.min() >= -tol and (y0 + ch).max() <= h + tol
    assert scale[0] - tol <= area.min() and area.max() <= scale[1] + tol
    assert ratio[0] - tol <= aspect.min() and aspect.max() <= ratio[1] + tol
    # ... and covers them.
    assert area.min() < scale[0] + 0.02 * (scale[1] - scale[0])
    assert area.max() > scale[1] - 0.05 * (scale[1] - scale[0])
    assert aspect.min() < ratio[0] * 1.02 and aspect.max() > ratio[1] / 1.02
    # Unclipped draws: area ~ U(scale), log aspect ~ U(log ratio), independently.
    cut = min(scale[1], 0.5)
    free = area <= cut + tol
    assert _near_rate(free, (cut - scale[0]) / (scale[1] - scale[0]))
    u_area = (area[free] - scale[0]) / (cut - scale[0])
    u_aspect = np.log(aspect[free] / ratio[0]) / np.log(ratio[1] / ratio[0])
    assert _ks_uniform(u_area) > 1e-3
    assert _ks_uniform(u_aspect) > 1e-3
    # The position is uniform over the placements that fit.
    for start, size, side in ((x0, cw, w), (y0, ch, h)):
        room = side - size > 1
        assert _ks_uniform(start[room] / (side - size[room])) > 1e-3


@pytest.mark.parametrize('flip', [True, False])
def test_random_views_flip_rate(flip):
    n = 2000
    x = _ramp_image(S, S)
    y = _views(32, x, n, flip=flip, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
               jitter_p=0.0, gray_p=0.0)
    same = np.abs(y - x).max(axis=(1, 2, 3)) < 1e-5
    mirrored = np.abs(y - x[:, ::-1]).max(axis=(1, 2, 3)) < 1e-5
    assert np.all(same != mirrored)  # each view is exactly one of the two
    if flip:
        assert _near_rate(mirrored, 0.5)
    else:
        assert not mirrored.any()


def test_random_views_grayscale_rate():
    n, p = 4000, DEFAULT.views.gray_p
    x = _image(33)
    # The training views; gray_p=0 gives each key's view before the grayscale
    # step, as the grayscale coin has its own key. gray_p traced: one compilation.
    fn = jax.jit(lambda k, im, gray_p: views.random_views(
        k, im, **_view_kw(gray_p=gray_p)))
    keys, images = _keys(34, n), jnp.broadcast_to(x, (n,) + x.shape)
    y = np.asarray(fn(keys, images, p))
    y0 = np.asarray(fn(keys, images, 0.0))
    gray0 = np.broadcast_to(
        np.asarray(jax.vmap(views.grayscale)(jnp.asarray(y0))), y0.shape)
    is_gray = np.abs(y - gray0).max(axis=(1, 2, 3)) < 1e-5
    is_colour = np.abs(y - y0).max(axis=(1, 2, 3)) < 1e-5
    assert np.all(is_gray != is_colour)
    # R == G == B exactly for the gray views only (the input is coloured).
    rgb_equal = np.all((y[..., 0] == y[..., 1]) & (y[..., 1] == y[..., 2]),
                       axis=(1, 2))
    np.testing.assert_array_equal(rgb_equal, is_gray)
    assert _near_rate(is_gray, p)
    y0_equal = np.all((y0[..., 0] == y0[..., 1]) & (y0[..., 1] == y0[..., 2]),
                      axis=(1, 2))
    assert not y0_equal.any()


def test_random_views_jitter_rate():
    n, p = 4000, DEFAULT.views.jitter_p
    x = np.asarray(_image(35))
    y = _views(36, x, n, flip=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
               gray_p=0.0)
    diff = np.abs(y - x).max(axis=(1, 2, 3))
    # Untouched views equal the input (to the crop's rounding); jittered ones move.
    assert np.all((diff < 1e-5) | (diff > 1e-3))
    jittered = diff > 1e-3
    assert _near_rate(jittered, p)


# Negatives through negative_batch, as training draws them, with weight on four
# transforms whose outputs differ (and none on sobel), so that each negative can be
# matched against every composition of them applied with the same key. Five names
# rather than config.negatives.transforms keep the compilations short.
NEG_NAMES = ('rotation', 'sobel', 'cutperm', 'gaussian_noise', 'cutout')
NEG_USED = ('rotation', 'cutperm', 'gaussian_noise', 'cutout')
NEG_WEIGHTS = (4.0, 3.0, 2.0, 1.0)
NEG_MAX_COMPOSE = 2  # the longest compositions matched


def _neg_weights():
    w = np.zeros(len(NEG_NAMES), np.float32)
    for name, wi in zip(NEG_USED, NEG_WEIGHTS):
        w[NEG_NAMES.index(name)] = wi
    return w


@functools.cache
def _transform_fn(name):
    return jax.jit(jax.vmap(transforms.TRANSFORM_FNS[name]))


def _match_compositions(y, keys, images, partners):
    """Which compositions of NEG_USED each negative y[n] equals (to 1e-5).

    Candidates: every (sigma_1, ..., sigma_r), r <= NEG_MAX_COMPOSE, applied as
    compose does, sigma_1 o ... o sigma_r with the last drawn running first and
    stage i keyed fold_in(key, i). Returns (compositions, (N, C) bool).
    """
    stage_keys = [jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
                  for i in range(NEG_MAX_COMPOSE)]
    out, last = {(): images}, [()]  # keyed by the order applied
    for i in range(NEG_MAX_COMPOSE):
        last = [a + (t,) for a in last for t in NEG_USED if t not in a]
        for a in last:
            out[a] = _transform_fn(a[-1])(stage_keys[i], out[a[:-1]], partners)
    del out[()]
    seqs = [a[::-1] for a in out]
    err = np.stack([np.abs(np.asarray(c) - y).max(axis=(1, 2, 3))
                    for c in out.values()], axis=1)
    return seqs, err < 1e-5


@functools.cache
def _negatives_fn(per, max_compose):
    # As training calls it: one batch key and the batch's sample keys per call.
    return jax.jit(functools.partial(
        negatives.negative_batch, mode='compose', per=per,
        max_compose=max_compose, names=NEG_NAMES))


def _draw_negatives(seed, per, max_compose, m, b):
    """m batches of b negatives, flat: (y, apply keys, images, partners, drawn).

    drawn[n]: the composition (sigma_1, ..., sigma_r) that sample_composition
    draws for sample n, from the batch key (per='batch') or split(key)[0] of the
    sample's key (per='sample', which applies it with split(key)[1]).
    """
    images = jax.random.uniform(jax.random.key(seed), (m, b, S, S, 3))
    partners = jnp.roll(images, 1, axis=1)
    sample_keys = _keys(seed + 1, m * b).reshape(m, b)
    batch_keys = _keys(seed + 2, m)
    fn, w = _negatives_fn(per, max_compose), _neg_weights()
    y = np.concatenate([
        np.asarray(fn(batch_keys[i], sample_keys[i], images[i], partners[i], w))
        for i in range(m)])
    keys = sample_keys.reshape(-1)
    if per == 'batch':
        comp_keys = jnp.repeat(batch_keys, b)
    else:
        comp_keys, keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    order, r = jax.jit(jax.vmap(lambda k: negatives.sample_composition(
        k, w, max_compose)))(comp_keys)
    drawn = [tuple(NEG_NAMES[j] for j in o[:ri])
             for o, ri in zip(np.asarray(order), np.asarray(r))]
    return (y, keys, images.reshape((m * b,) + images.shape[2:]),
            partners.reshape((m * b,) + partners.shape[2:]), drawn)


NEG_N = 2000  # negatives per test, one shape for one compilation of the matcher


@pytest.mark.slow
def test_negative_batch_per_batch_applies_one_composition():
    m, b = NEG_N // 8, 8
    y, keys, images, partners, drawn = _draw_negatives(
        40, 'batch', NEG_MAX_COMPOSE, m, b)
    seqs, match = _match_compositions(y, keys, images, partners)
    # Each negative is the composition drawn from the batch key.
    assert all(match[n, seqs.index(d)] for n, d in enumerate(drawn))
    common = match.reshape(m, b, -1).all(axis=1)  # (m, C)
    assert common.any(axis=1).all()  # one composition explains each whole batch
    chosen = {seqs[int(np.argmax(c))] for c in common}
    # 250 batches draw ~15.9 of the 16 compositions on average; < 12 is ~never.
    assert {len(c) for c in chosen} == {1, 2} and len(chosen) >= 12


def test_negative_batch_per_sample_draws_a_composition_per_sample():
    m, b = NEG_N // 8, 8
    y, keys, images, partners, drawn = _draw_negatives(
        41, 'sample', NEG_MAX_COMPOSE, m, b)
    seqs, match = _match_compositions(y, keys, images, partners)
    # Each negative is the composition drawn from its own key.
    assert all(match[n, seqs.index(d)] for n, d in enumerate(drawn))
    common = match.reshape(m, b, -1).all(axis=1)
    # Eight independent draws are all equal with probability < 3e-6 per batch.
    assert not common.any()
    chosen = {seqs[int(np.argmax(c))] for c in match}
    assert chosen == set(seqs)


@pytest.mark.slow
@pytest.mark.parametrize('per', ['batch', 'sample'])
def test_negative_batch_single_transform_frequencies_follow_weights(per):
    """max_compose=1 (the default): one transform, drawn in proportion to the weights."""
    # per='batch': one draw per batch (of two samples); per='sample': per sample.
    m, b = (NEG_N // 2, 2) if per == 'batch' else (1, NEG_N)
    y, keys, images, partners, drawn = _draw_negatives(42, per, 1, m, b)
    seqs, match = _match_compositions(y, keys, images, partners)
    assert all(match[n, seqs.index(d)] for n, d in enumerate(drawn))
    single = [i for i, s in enumerate(seqs) if len(s) == 1]
    assert np.all(match.sum(axis=1) == 1)  # exactly one composition matches...
    assert np.all(match[:, single].sum(axis=1) == 1)  # ... a single transform
    chosen = np.argmax(match, axis=1).reshape(m, b)
    if per == 'batch':
        assert np.all(chosen == chosen[:, :1])
        draws = chosen[:, 0]
    else:
        draws = chosen.ravel()
    w = dict(zip(NEG_USED, NEG_WEIGHTS))
    for i in single:
        assert _near_rate(draws == i, w[seqs[i][0]] / sum(NEG_WEIGHTS)), seqs[i]
