"""LARS and the schedule against numpy restatements of the authors' torchlars rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import optax
from ml_collections import ConfigDict

from unode_jax.configs import default
from unode_jax.training import optim


def _config(name='torchlars', **kw):
    c = dict(name=name, weight_decay=1e-6, trust_coefficient=1e-3, eps=1e-8, momentum=0.9,
             unfreeze_step=0)
    c.update(kw)
    return ConfigDict(c)


def torchlars_numpy(params, grads_seq, lrs, wd=1e-6, eta=1e-3, eps=1e-8, momentum=0.9):
    """torchlars.LARS(SGD(momentum, weight_decay)) restated: trust ratio, momentum, then lr."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    for grads, lr in zip(grads_seq, lrs):
        for k, w in params.items():
            g = grads[k].astype(np.float64)
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            ratio = eta * w_norm / (g_norm + wd * w_norm + \
                                    eps) if w_norm > 0 and g_norm > 0 else 1.0
            d = (g + wd * w) * ratio
            buf[k] = momentum * buf[k] + d
            params[k] = w - lr * buf[k]
    return params


def _run(tx, params, grads_seq, lrs):
    state = tx.init(params)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    for grads, lr in zip(grads_seq, lrs):
        state = optim.set_learning_rate(state, lr)
        updates, state = tx.update({k: jnp.asarray(v) for k, v in grads.items()}, state, p)
        p = {k: p[k] + updates[k] for k in p}
    return p


def test_torchlars_matches_numpy_restatement():
    rng = np.random.default_rng(0)
    params = {'w': rng.normal(size=(4, 3)).astype(np.float32),
              'b': np.zeros(3, np.float32),  # ||w|| = 0: trust ratio 1
              'bn': rng.normal(size=(3,)).astype(np.float32)}
    grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
                 for _ in range(5)]
    grads_seq[2]['bn'][:] = 0  # ||g|| = 0: trust ratio 1, only weight decay moves it
    lrs = [0.1, 0.5, 1.0, 0.7, 0.2]
    got = _run(optim.lars_optimizer(_config()), params, grads_seq, lrs)
    want = torchlars_numpy(params, grads_seq, lrs)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7)


def _optax_lars_config(**kw):
    """configs/default.py's optim section with name='optax_lars' (and the overrides)."""
    c = default.get_config().optim
    c.name = 'optax_lars'
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _schedule(c, steps, steps_per_epoch):
    return [float(optim.learning_rate(jnp.float32(s), jnp.float32(steps_per_epoch),
                                      base_lr=c.base_lr, peak_lr=c.peak_lr,
                                      warmup_epochs=c.warmup_epochs,
                                      decay_epochs=c.decay_epochs)) for s in range(steps)]


def optax_lars_numpy(params, grads_seq, lrs, wd, eta, eps, momentum):
    """optax.lars restated: g + wd w, ratio eta ||w|| / (||g + wd w|| + eps) (1 if a norm is 0),
    then the learning rate, then momentum; every leaf decayed and adapted (no masks)."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    for grads, lr in zip(grads_seq, lrs):
        for k, w in params.items():
            d = grads[k].astype(np.float64) + wd * w
            w_norm, d_norm = np.linalg.norm(w), np.linalg.norm(d)
            ratio = eta * w_norm / (d_norm + eps) if w_norm > 0 and d_norm > 0 else 1.0
            buf[k] = momentum * buf[k] + lr * ratio * d
            params[k] = w - buf[k]
    return params


def test_optax_lars_option_is_optax_lars_with_the_config_settings():
    """optim.name='optax_lars' takes 5 steps as optax.lars built from the same config: the
    schedule's learning rates, weight decay, trust coefficient, eps and momentum, with weight
    decay and the trust ratio on every leaf (biases and BatchNorm too: no masks)."""
    c = _optax_lars_config(weight_decay=0.05, trust_coefficient=0.02, eps=1e-3, momentum=0.8,
                           warmup_epochs=1, num_epochs=3)
    rng = np.random.default_rng(3)
    params = {'w': rng.normal(size=(5, 4)).astype(np.float32),
              'b': np.zeros(4, np.float32),  # ||w|| = 0 at the start: ratio 1
              'bn_scale': rng.normal(1, 0.1, size=(4,)).astype(np.float32),
              'bn_bias': rng.normal(size=(4,)).astype(np.float32)}
    grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
                 for _ in range(5)]
    lrs = _schedule(c, 5, steps_per_epoch=2)  # warmup then cosine: five different rates
    assert len(set(lrs)) == 5
    got = _run(optim.lars_optimizer(c), params, grads_seq, lrs)
    ref_tx = optax.lars(lambda count: jnp.asarray(lrs, jnp.float32)[count],
                        weight_decay=c.weight_decay, trust_coefficient=c.trust_coefficient,
                        eps=c.eps, momentum=c.momentum)
    ref_state, ref = ref_tx.init(params), dict(params)
    for g in grads_seq:
        updates, ref_state = ref_tx.update(g, ref_state, ref)
        ref = optax.apply_updates(ref, updates)
    want = optax_lars_numpy(params, grads_seq, lrs, c.weight_decay, c.trust_coefficient, c.eps,
                            c.momentum)
    for k in params:  # the displacement, so a small update's error is not hidden by |w|
        moved = np.asarray(got[k]) - params[k]
        np.testing.assert_allclose(moved, np.asarray(ref[k]) - params[k], rtol=1e-6, atol=1e-8,
                                   err_msg=k)
        np.testing.assert_allclose(moved, want[k] - params[k], rtol=1e-5, atol=1e-7,
                                   err_msg=k)
        assert np.abs(moved).max() > 1e-3, k


@pytest.mark.slow
def test_optax_lars_train_state_steps_as_optax_lars_on_the_model():
    """create_train_state's optimizer with optim.name='optax_lars', stepped as train_step does
    (apply_gradients; the schedule inside it), equals optax.lars with that schedule on the
    tiny model's params."""
    from tests.tiny_config import tiny_config
    from unode_jax.training.train import create_train_state
    config = tiny_config(**{'optim.name': 'optax_lars', 'optim.weight_decay': 0.05,
                            'optim.trust_coefficient': 0.01})
    c = config.optim
    state = create_train_state(jax.random.key(0), config, 16)
    params = state.params
    leaves = jax.tree.leaves(params)
    rng = np.random.default_rng(4)
    grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
                 for _ in range(4)]
    lrs = _schedule(c, 4, steps_per_epoch=2)
    # The schedule is inside the optimiser: the learning rates come from its state.
    state = state.replace(opt_state=optim.set_steps_per_epoch(state.opt_state, 2))
    for g, lr in zip(grads_seq, lrs):
        state = state.apply_gradients(grads=g)
        assert float(optim.applied_learning_rate(state.opt_state)) == np.float32(lr)
    ref_tx = optax.lars(lambda count: jnp.asarray(lrs, jnp.float32)[count],
                        weight_decay=c.weight_decay, trust_coefficient=c.trust_coefficient,
                        eps=c.eps, momentum=c.momentum)
    ref_state, ref = ref_tx.init(params), params
    for g in grads_seq:
        updates, ref_state = ref_tx.update(g, ref_state, ref)
        ref = optax.apply_updates(ref, updates)
    assert any(not np.any(p) for p in leaves)  # zero-initialised biases are in the tree
    flat_got = jax.tree_util.tree_leaves_with_path(state.params)
    for (path, a), b, p0 in zip(flat_got, jax.tree.leaves(ref), leaves):
        np.testing.assert_allclose(np.asarray(a) - p0, np.asarray(b) - p0, rtol=1e-5, atol=1e-8,
                                   err_msg=jax.tree_util.keystr(path))


def test_optax_lars_freeze_keeps_a_fresh_optax_lars_for_frozen_leaves():
    """With a freeze mask, a frozen leaf stays put until unfreeze_step, then moves as a fresh
    optax.lars started there; the free leaf moves as optax.lars from step 0."""
    c = _optax_lars_config(weight_decay=0.1, trust_coefficient=0.02, unfreeze_step=2)
    rng = np.random.default_rng(5)
    params = {'frozen': rng.normal(size=(4, 4)).astype(np.float32),
              'free': rng.normal(size=(4,)).astype(np.float32)}
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
             for _ in range(4)]
    lrs = [0.5, 1.0, 0.8, 0.3]
    got = _run(optim.lars_optimizer(c, freeze_mask={'frozen': True, 'free': False}), params,
               grads, lrs)

    def ref(name, start):
        tx = optax.lars(lambda count: jnp.asarray(lrs[start:], jnp.float32)[count],
                        weight_decay=c.weight_decay, trust_coefficient=c.trust_coefficient,
                        eps=c.eps, momentum=c.momentum)
        p = params[name]
        s = tx.init(p)
        for g in grads[start:]:
            u, s = tx.update(g[name], s, p)
            p = optax.apply_updates(p, u)
        return np.asarray(p)

    np.testing.assert_allclose(got['frozen'], ref('frozen', 2), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got['free'], ref('free', 0), rtol=1e-6, atol=1e-7)
    assert not np.allclose(ref('frozen', 0), ref('frozen', 2), rtol=1e-6, atol=1e-7)


def test_optax_lars_option_differs_from_torchlars():
    rng = np.random.default_rng(1)
    params = {'w': rng.normal(size=(6, 6)).astype(np.float32)}
    grads_seq = [{'w': rng.normal(size=(6, 6)).astype(np.float32)} for _ in range(3)]
    a = _run(optim.lars_optimizer(_config('optax_lars', weight_decay=0.1)), params, grads_seq,
             [1.0] * 3)
    b = _run(optim.lars_optimizer(_config(weight_decay=0.1)), params, grads_seq, [1.0] * 3)
    assert np.all(np.isfinite(a['w'])) and not np.allclose(a['w'], b['w'])


def test_freeze_until_step():
    params = {'frozen': np.ones(3, np.float32), 'free': np.ones(3, np.float32)}
    tx = optim.lars_optimizer(_config(unfreeze_step=2),
                                freeze_mask={'frozen': True, 'free': False})
    grads = {'frozen': np.ones(3, np.float32), 'free': np.ones(3, np.float32)}
    state = tx.init(params)
    moved = []
    for _ in range(3):
        state = optim.set_learning_rate(state, 1.0)
        updates, state = tx.update(grads, state, params)
        moved.append((float(np.abs(updates['frozen']).sum()), float(np.abs(updates['free']).sum())))
    assert moved[0][0] == 0 and moved[1][0] == 0 and moved[2][0] > 0
    assert all(m[1] > 0 for m in moved)


def test_frozen_parameters_keep_a_fresh_momentum_as_torch_requires_grad_false():
    """After unfreezing, a frozen parameter moves as if optimisation started there."""
    rng = np.random.default_rng(0)
    params = {'frozen': rng.normal(size=(4, 4)).astype(np.float32),
              'free': rng.normal(size=(4,)).astype(np.float32)}
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
             for _ in range(4)]
    tx = optim.lars_optimizer(_config(unfreeze_step=2, weight_decay=0.1),
                                freeze_mask={'frozen': True, 'free': False})
    state, p = tx.init(params), params
    for g in grads:
        state = optim.set_learning_rate(state, 1.0)
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    # Reference: the frozen leaf alone, optimised from step 2 with a fresh optimizer.
    ref_tx = optim.lars_optimizer(_config(weight_decay=0.1))
    ref_p = {'frozen': params['frozen']}
    ref_state = ref_tx.init(ref_p)
    for g in grads[2:]:
        ref_state = optim.set_learning_rate(ref_state, 1.0)
        updates, ref_state = ref_tx.update({'frozen': g['frozen']}, ref_state, ref_p)
        ref_p = optax.apply_updates(ref_p, updates)
    np.testing.assert_allclose(p['frozen'], ref_p['frozen'], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('t, want', [(0.0, 0.1), (5.0, 0.55),
                         (10.0, 1.0), (55.0, 0.5), (100.0, 0.0)])
def test_schedule_warmup_then_cosine(t, want):
    spe = 7
    lr = optim.learning_rate(jnp.float32(t * spe), jnp.float32(spe), base_lr=0.1, peak_lr=1.0,
                             warmup_epochs=10, decay_epochs=90)
    np.testing.assert_allclose(lr, want, atol=1e-6)


def test_schedule_authors_decay_over_all_epochs():
    # The authors: lr = 0.5 (1 + cos(pi (t - 10) / E)) after warmup, E = all epochs.
    lr = optim.learning_rate(jnp.float32(60.0), jnp.float32(1.0), base_lr=0.1, peak_lr=1.0,
                             warmup_epochs=10, decay_epochs=100)
    np.testing.assert_allclose(lr, 0.5 * (1 + np.cos(np.pi * 50 / 100)), atol=1e-6)
