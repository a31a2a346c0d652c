"""LARS optimisers and the warmup + cosine learning-rate schedule.

Default: the torchlars rule that the authors' code uses (LARS around SGD with
momentum), restated exactly:

    g <- (g + wd * w) * eta * ||w|| / (||g|| + wd * ||w|| + eps)   (ratio 1 if ||w|| or ||g|| is 0)
    buf <- momentum * buf + g
    w <- w - lr * buf

`optax.lars` (denominator ||g + wd*w||, learning rate applied before momentum) is
the option `optim.name='optax_lars'`. The schedule lives in the optimiser: each update
sets the learning rate from `learning_rate(count, steps_per_epoch, ...)`, with the epoch
length held in the optimiser's state (`set_steps_per_epoch`), so one compiled train step
serves training sets of any size.
"""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('torchlars', 'optax_lars')


def scale_by_torchlars(weight_decay=1e-6, eta=1e-3, eps=1e-8) -> optax.GradientTransformation:
    """torchlars' LARS step: weight decay folded in, then the layer-wise trust ratio."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params):
        def one(g, w):
            w_norm = jnp.linalg.norm(w)
            g_norm = jnp.linalg.norm(g)
            ratio = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
            ratio = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
            return (g + weight_decay * w) * ratio

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def freeze(inner, mask, until_step) -> optax.GradientTransformation:
    """`inner`, with the masked parameters left out while the step count is below until_step.

    As torch's requires_grad=False, whose SGD skips a frozen parameter entirely: no
    update, no weight decay, and no momentum, which therefore starts from zero when the
    parameter unfreezes. Used to keep the stem, layer1 and layer2 of a pretrained
    backbone fixed for the first epochs, as the authors do; their BatchNorm statistics
    still update. The state is (inner state, step count).
    """

    def init_fn(params):
        return inner.init(params), optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        inner_state, schedule = state
        frozen = schedule.count < until_step
        new_updates, new_inner = inner.update(updates, inner_state, params)
        new_updates = jax.tree.map(lambda u, m: jnp.where(m & frozen, jnp.zeros_like(u), u),
                                   new_updates, mask)
        # Every parameter-shaped part of the state (momentum) keeps its old value.
        params_def = jax.tree.structure(mask)

        def is_params(x):
            return jax.tree.structure(x) == params_def

        def keep(new, old):
            if not is_params(new):
                return new
            return jax.tree.map(lambda n, o, m: jnp.where(m & frozen, o, n), new, old, mask)

        new_inner = jax.tree.map(keep, new_inner, inner_state, is_leaf=is_params)
        count = optax.safe_increment(schedule.count)
        return new_updates, (new_inner, optax.ScaleByScheduleState(count=count))

    return optax.GradientTransformation(init_fn, update_fn)


def learning_rate(step, steps_per_epoch, *, base_lr, peak_lr, warmup_epochs, decay_epochs):
    """Linear warmup base_lr -> peak_lr over warmup_epochs, then cosine to 0 over decay_epochs.

    Evaluated per iteration at the fractional epoch t = step / steps_per_epoch, as the
    authors' GradualWarmupScheduler + CosineAnnealingLR do. The paper decays over the
    epochs after warmup (decay_epochs = num_epochs - warmup_epochs); the authors' code
    over all epochs (decay_epochs = num_epochs).
    """
    t = step / steps_per_epoch
    warm = base_lr + (peak_lr - base_lr) * t / jnp.maximum(warmup_epochs, 1e-9)
    progress = jnp.clip((t - warmup_epochs) / jnp.maximum(decay_epochs, 1e-9), 0.0, 1.0)
    cos = 0.5 * peak_lr * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(t <= warmup_epochs, warm, cos).astype(jnp.float32)


class ScheduleState(NamedTuple):
    count: jnp.ndarray  # int32: updates so far (the train step)
    steps_per_epoch: jnp.ndarray  # float32: the training set's steps per epoch
    inner: Any


def with_schedule(inner, schedule) -> optax.GradientTransformation:
    """inner (built with inject_hyperparams) with its learning rate set before each update
    to schedule(count, steps_per_epoch)."""

    def init_fn(params):
        return ScheduleState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32),
                             inner.init(params))

    def update_fn(updates, state, params=None):
        lr = schedule(state.count, state.steps_per_epoch)
        new_updates, new_inner = inner.update(updates, set_learning_rate(state.inner, lr),
                                              params)
        return new_updates, ScheduleState(optax.safe_increment(state.count),
                                          state.steps_per_epoch, new_inner)

    return optax.GradientTransformation(init_fn, update_fn)


def set_steps_per_epoch(opt_state, steps_per_epoch):
    return opt_state._replace(steps_per_epoch=jnp.asarray(steps_per_epoch, jnp.float32))


def applied_learning_rate(opt_state):
    """The learning rate of the last update (for the metrics)."""
    inner = opt_state.inner
    if isinstance(inner, tuple) and not hasattr(inner, 'hyperparams'):  # under freeze
        inner = inner[0]
    return inner.hyperparams['learning_rate']


def create_optimizer(optim_config, freeze_mask: Any = None) -> optax.GradientTransformation:
    """LARS, its learning rate scheduled inside (warmup + cosine over the epochs)."""
    c = optim_config
    return with_schedule(lars_optimizer(c, freeze_mask), functools.partial(
        learning_rate, base_lr=c.base_lr, peak_lr=c.peak_lr, warmup_epochs=c.warmup_epochs,
        decay_epochs=c.decay_epochs))


def lars_optimizer(optim_config, freeze_mask: Any = None) -> optax.GradientTransformation:
    """LARS (optim.name) with an injected learning rate (set_learning_rate), and the freeze
    of freeze_mask's parameters until optim.unfreeze_step."""
    c = optim_config
    if c.name not in OPTIMIZERS:
        raise ValueError(f'optim.name must be one of {OPTIMIZERS}, got {c.name!r}')

    def make(learning_rate):
        if c.name == 'torchlars':
            tx = optax.chain(
                scale_by_torchlars(c.weight_decay, c.trust_coefficient, c.eps),
                optax.trace(decay=c.momentum, nesterov=False),
                optax.scale_by_learning_rate(learning_rate),
            )
        else:
            tx = optax.lars(
                learning_rate, weight_decay=c.weight_decay, weight_decay_mask=True,
                trust_coefficient=c.trust_coefficient, eps=c.eps, trust_ratio_mask=True,
                momentum=c.momentum)
        return tx

    tx = optax.inject_hyperparams(make)(learning_rate=0.0)
    if freeze_mask is not None:
        tx = freeze(tx, freeze_mask, c.unfreeze_step)
    return tx


def set_learning_rate(opt_state, lr):
    """Write lr into the inject_hyperparams state (first element when chained with freeze)."""
    if isinstance(opt_state, tuple) and not hasattr(opt_state, 'hyperparams'):
        return (set_learning_rate(opt_state[0], lr),) + tuple(opt_state[1:])
    hyper = dict(opt_state.hyperparams)
    hyper['learning_rate'] = jnp.asarray(lr, hyper['learning_rate'].dtype)
    return opt_state._replace(hyperparams=hyper)
