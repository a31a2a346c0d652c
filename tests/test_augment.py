"""Tests for unode_jax.augment.views and unode_jax.augment.negatives."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unode_jax.augment import negatives
from unode_jax.augment import views

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
    fn = functools.partial(negatives.TRANSFORM_FNS[name], **params)
    return jax.jit(jax.vmap(fn, in_axes=(0, None, None)))


def test_transform_registry():
    assert tuple(negatives.TRANSFORM_FNS) == negatives.TRANSFORMS


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
        negatives.rotation(jax.random.key(0), x, x)


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
    lo, hi = negatives.cutout_bounds(size)
    assert (lo, hi) == (4, 6)  # ceil(24/6), floor(24/4)
    ones = jnp.ones((size, size, 3))
    y = np.asarray(jax.jit(jax.vmap(negatives.cutout, in_axes=(0, None, None)))(
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
    fn = jax.jit(negatives.sobel)
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
    y = np.asarray(negatives.gaussian_noise(jax.random.key(0), x, x))
    assert abs((y - 0.5).std() - 0.1) < 0.01


def test_blur_and_elastic_keep_constants():
    c = jnp.full((S, S, 3), 0.6)
    for name in ('blur', 'elastic'):
        y = np.asarray(negatives.TRANSFORM_FNS[name](jax.random.key(0), c, c))
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


def test_compose_applies_in_order_and_identity_after_r():
    names = ('rotation', 'cutperm')
    x, key = _image(22), jax.random.key(23)
    fn = jax.jit(functools.partial(negatives.compose, names=names))
    order = jnp.array([0, 1], jnp.int32)
    rot = negatives.rotation(jax.random.fold_in(key, 0), x, x)
    both = negatives.cutperm(jax.random.fold_in(key, 1), rot, x)
    np.testing.assert_array_equal(np.asarray(fn(key, x, x, order, 1)), rot)
    np.testing.assert_array_equal(np.asarray(fn(key, x, x, order, 2)), both)


def _batch():
    images = jax.random.uniform(jax.random.key(24), (B, S, S, 3))
    return images, jnp.roll(images, 1, axis=0)


@functools.cache
def _negative_fn(mode, per):
    # weights is a traced argument, so one compilation serves all weights.
    return jax.jit(functools.partial(negatives.negative_batch, mode=mode,
                                     per=per, max_compose=2))


MODES = [('compose', 'batch'), ('compose', 'sample'), ('single', 'batch')]


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
    expected = jax.vmap(negatives.TRANSFORM_FNS[name])(
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
