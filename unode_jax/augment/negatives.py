"""Hard negative transforms and their weighted random composition (UNODE).

Each transform has the signature `fn(key, x, partner, **params) -> x` on one
image (H, W, 3) float32 in [0, 1]; `partner` is another image of the batch
and only `mixup` uses it. All are pure, jittable and vmappable over
(key, x, partner), keep shape and dtype, and clip to [0, 1]. Parameters are
static keyword arguments; `negative_batch(params=...)` overrides them.

The paper (sec. 3.1) draws r ~ U{1..k} transforms without replacement, in
proportion to learned weights, and applies their composition;
`sample_composition` + `compose` implement that. The authors' released code
instead applies one transform per sample drawn from the weights;
`negative_batch(mode='single')` implements that.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.augment.transforms import TRANSFORMS, transform_branches

# negatives.mode: 'compose' (the paper's r ~ U{1..k} composition) or 'single' (the
# authors' one transform per sample); negatives.per: one composition per batch or sample.
COMPOSE_MODES = ('compose', 'single')
PER = ('batch', 'sample')


# ----------------------------------------------------------------------------
# Composition.
# ----------------------------------------------------------------------------


def sample_composition(key, weights, max_compose):
    """Draws which transforms to compose, and how many.

    Args:
      key: PRNG key.
      weights: (K,) non-negative float weights (may be traced, need not sum to
        1). At least one must be positive.
      max_compose: static int, upper bound on r.

    Returns:
      (order (K,) int32, r int32): a weighted permutation without replacement
      (Gumbel-top-k on log w, i.e. successive draws proportional to the
      remaining weights; a zero weight has score -inf and so comes after every
      nonzero one) and r ~ U{1..min(max_compose, #nonzero weights)}, so a zero
      weight is never among the r applied.
    """
    weights = jnp.asarray(weights, jnp.float32)
    k_order, k_r = jax.random.split(key)
    scores = jnp.log(weights) + jax.random.gumbel(k_order, weights.shape)
    order = jnp.argsort(-scores).astype(jnp.int32)
    n_pos = jnp.sum(weights > 0).astype(jnp.int32)
    r_max = jnp.maximum(jnp.minimum(max_compose, n_pos), 1)
    r = jax.random.randint(k_r, (), 1, r_max + 1).astype(jnp.int32)
    return order, r


def compose(key, x, partner, order, r, names=TRANSFORMS, *, params=None,
            num_stages=None):
    """Applies s_order[0] o s_order[1] o ... o s_order[r-1] to one image.

    As the paper's notation s_sigma1 o ... o s_sigmar (sec. 3.1), the rightmost runs
    first: stage i applies order[r-1-i], so order[r-1] is applied first and order[0],
    the first (most likely the heaviest-weighted) draw, last. Stage i uses key
    fold_in(key, i); stages >= r are the identity. A lax.switch over the transforms
    (identity as the last branch) inside a fori_loop. When `order` and `r` are not
    batched under vmap (one composition per batch), the switch stays a real branch and only
    the chosen transform runs; per-sample compositions turn it into a select
    that evaluates every transform at every stage.

    Args:
      key: PRNG key for the transforms' own random parameters.
      x: (H, W, 3) image; partner: (H, W, 3) image for mixup.
      order: (K,) int indices into `names`; r: int, number of stages applied.
      names: static tuple of transform names (K = len(names)).
      params: optional static dict name -> keyword overrides.
      num_stages: static loop length, default K; may be lowered to any bound
        on r (negative_batch passes max_compose) to save work.
    """
    branches = transform_branches(names, params) + [lambda k, y, p: y]
    identity = len(names)
    num_stages = len(names) if num_stages is None else int(num_stages)

    def stage(i, y):
        idx = jnp.where(i < r, order[jnp.maximum(r - 1 - i, 0)], identity)
        return jax.lax.switch(idx, branches, jax.random.fold_in(key, i), y,
                              partner)

    return jax.lax.fori_loop(0, num_stages, stage, jnp.asarray(x, jnp.float32))


def _check_weights(weights, k):
    """Static checks of the weights when they are concrete (not traced)."""
    try:
        w = np.asarray(weights)
    except jax.errors.TracerArrayConversionError:
        return
    if w.shape != (k,):
        raise ValueError(f'weights must have shape ({k},), got {w.shape}.')
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f'weights must be >= 0 with one > 0, got {w}.')


def negative_batch(batch_key, sample_keys, images, partners, weights, *,
                   mode='compose', per='batch', max_compose=None,
                   names=TRANSFORMS, params=None, with_index=False):
    """Hard negatives for a batch (B,H,W,3) -> (B,H,W,3) (with_index: and (B,) int32,
    the index in `names` of each negative's transform, the last one applied in a
    composition: the transform head's target, exact when one transform is applied).

    mode='compose' (the paper): r and the weighted order drawn once per batch
    from batch_key when per='batch' (the paper applies one composition s* to
    the whole batch; the scalar lax.switch then runs only the chosen branch,
    which is cheap on accelerators), or per sample from sample_keys when
    per='sample'. The transforms' own random parameters always come from the
    per-sample keys.
    mode='single' (the authors' code): each sample draws one transform index ~
    Categorical(weights) from its own key and applies it; a zero weight gives
    logit -inf and is never drawn. `per` is ignored.

    Per-sample indices (per='sample', mode='single') make lax.switch a select
    under vmap, so every listed transform runs on every sample at each stage;
    per='batch' avoids that. All listed transforms are traced either way, so
    drop 'rotation' from `names` for non-square images.

    Args:
      batch_key: PRNG key for the batch-level composition.
      sample_keys: (B,) PRNG keys, one per sample.
      images: (B, H, W, 3) float32 in [0, 1].
      partners: (B, H, W, 3) mixup partners (e.g. a roll of `images`).
      weights: (K,) float, aligned with `names`, may be traced; need not sum
        to 1; must have at least one positive entry (checked here when
        concrete; with traced weights an all-zero vector is the caller's bug).
      mode: 'compose' or 'single'.
      per: 'batch' or 'sample' (mode='compose' only).
      max_compose: static bound on r; None means K.
      names: static tuple of transform names.
      params: optional static dict name -> keyword overrides.
    """
    names = tuple(names)
    k = len(names)
    _check_weights(weights, k)
    weights = jnp.asarray(weights, jnp.float32)
    max_compose = k if max_compose is None else min(int(max_compose), k)
    if max_compose < 1:
        raise ValueError(f'max_compose must be >= 1, got {max_compose}.')

    if mode == 'single':
        branches = transform_branches(names, params)
        logits = jnp.log(weights)

        def one(key, x, p):
            k_choice, k_apply = jax.random.split(key)
            idx = jax.random.categorical(k_choice, logits)
            return jax.lax.switch(idx, branches, k_apply, x, p), idx.astype(jnp.int32)

        out, index = jax.vmap(one)(sample_keys, images, partners)
        return (out, index) if with_index else out

    if mode != 'compose':
        raise ValueError(f"mode must be one of {COMPOSE_MODES}, got {mode!r}.")
    comp = functools.partial(compose, names=names, params=params,
                             num_stages=max_compose)
    if per == 'batch':
        order, r = sample_composition(batch_key, weights, max_compose)
        out = jax.vmap(comp, in_axes=(0, 0, 0, None, None))(
            sample_keys, images, partners, order, r)
        index = jnp.full((images.shape[0],), order[0], jnp.int32)
        return (out, index) if with_index else out
    if per == 'sample':

        def one(key, x, p):
            k_comp, k_apply = jax.random.split(key)
            order, r = sample_composition(k_comp, weights, max_compose)
            return comp(k_apply, x, p, order, r), order[0]

        out, index = jax.vmap(one)(sample_keys, images, partners)
        return (out, index) if with_index else out
    raise ValueError(f"per must be one of {PER}, got {per!r}.")
