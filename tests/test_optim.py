"""LARS and the schedule against numpy restatements of the authors' torchlars rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import optax
from ml_collections import ConfigDict

from unode_jax import optim


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
    got = _run(optim.create_optimizer(_config()), params, grads_seq, lrs)
    want = torchlars_numpy(params, grads_seq, lrs)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7)


def test_optax_lars_option_differs_from_torchlars():
    rng = np.random.default_rng(1)
    params = {'w': rng.normal(size=(6, 6)).astype(np.float32)}
    grads_seq = [{'w': rng.normal(size=(6, 6)).astype(np.float32)} for _ in range(3)]
    a = _run(optim.create_optimizer(_config('optax_lars', weight_decay=0.1)), params, grads_seq,
             [1.0] * 3)
    b = _run(optim.create_optimizer(_config(weight_decay=0.1)), params, grads_seq, [1.0] * 3)
    assert np.all(np.isfinite(a['w'])) and not np.allclose(a['w'], b['w'])


def test_freeze_until_step():
    params = {'frozen': np.ones(3, np.float32), 'free': np.ones(3, np.float32)}
    tx = optim.create_optimizer(_config(unfreeze_step=2),
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
    tx = optim.create_optimizer(_config(unfreeze_step=2, weight_decay=0.1),
                                freeze_mask={'frozen': True, 'free': False})
    state, p = tx.init(params), params
    for g in grads:
        state = optim.set_learning_rate(state, 1.0)
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    # Reference: the frozen leaf alone, optimised from step 2 with a fresh optimizer.
    ref_tx = optim.create_optimizer(_config(weight_decay=0.1))
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
