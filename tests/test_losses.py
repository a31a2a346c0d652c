"""Losses against numpy restatements of the equations, and across fake devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unode_jax.training import losses


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def paper_loss_numpy(z1, z2, zn1, zn2, tau):
    """Eq. (9)-(11) written out term by term."""
    z1, z2, zn1, zn2 = map(_unit, (z1, z2, zn1, zn2))
    B = len(z1)
    total = 0.0
    for i in range(B):
        neg = [zn1[j] for j in range(B) if j != i] + [zn2[j] for j in range(B) if j != i]
        for anchor, pos in ((z1[i], z2[i]), (z2[i], z1[i])):
            num = np.exp(anchor @ pos / tau)
            den = num + sum(np.exp(anchor @ n / tau) for n in neg)
            total += -np.log(num / den)
    return total / B


def ntxent_numpy(*blocks, tau):
    """NT-Xent over the rows of the blocks; row r pairs with row r + n/2 (mod n)."""
    rows = _unit(np.concatenate(blocks))
    n = len(rows)
    total = 0.0
    for r in range(n):
        p = (r + n // 2) % n
        den = sum(np.exp(rows[r] @ rows[k] / tau) for k in range(n) if k != r)
        total += -np.log(np.exp(rows[r] @ rows[p] / tau) / den)
    return total / n


def ce_numpy(logits, labels):
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.mean(logp[np.arange(len(labels)), labels])


@pytest.fixture
def zs():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(8, 5)).astype(np.float64) for _ in range(4)]


@pytest.mark.parametrize('tau', [0.5, 1.0])
def test_paper_loss_matches_equations(zs, tau):
    got = losses.paper_contrastive(*map(jnp.asarray, zs), tau)
    np.testing.assert_allclose(got, paper_loss_numpy(*zs, tau), rtol=1e-5)


def test_authors_ntxent_matches_numpy(zs):
    z1, z2, zn1, zn2 = zs
    got = losses.authors_ntxent(*map(jnp.asarray, (z1, zn1, z2, zn2)), 0.5)
    np.testing.assert_allclose(got, ntxent_numpy(z1, zn1, z2, zn2, tau=0.5), rtol=1e-5)


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(12, 2))
    labels = rng.integers(0, 2, 12)
    got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 12)
    np.testing.assert_allclose(got, ce_numpy(logits, labels), rtol=1e-5)


def test_own_negatives_are_excluded():
    # Eq. (10) takes negatives from the other images only: with one image there are
    # none, the positive is the whole denominator and the loss is exactly 0.
    rng = np.random.default_rng(2)
    z1, z2, zn1, zn2 = (jnp.asarray(rng.normal(size=(1, 3))) for _ in range(4))
    assert float(losses.paper_contrastive(z1, z2, zn1, zn2, 0.5)) == 0.0


@pytest.mark.parametrize('kind', losses.LOSS_KINDS)
@pytest.mark.parametrize('n_dev', [pytest.param(2, marks=pytest.mark.devices(2)),
                                   pytest.param(4, marks=pytest.mark.devices(4))])
def test_sharded_loss_and_gradient_equal_single_device(zs, kind, n_dev):
    zs = [jnp.asarray(z, jnp.float32) for z in zs]

    def single(zs):
        return losses.contrastive_loss(kind, *zs, 0.5)

    def per_device(zs):
        return losses.contrastive_loss(kind, *zs, 0.5, axis_name='d')

    shard = lambda z: z.reshape(n_dev, -1, z.shape[-1])
    p_loss = jax.pmap(lambda z: jax.lax.psum(per_device(z), 'd'), axis_name='d')
    want, want_grad = single(zs), jax.grad(single)(zs)
    sharded = [shard(z) for z in zs]
    np.testing.assert_allclose(p_loss(sharded)[0], want, rtol=1e-5)
    # Each device returns the gradient of the global loss w.r.t. its own rows.
    got_grad = jax.pmap(jax.grad(per_device), axis_name='d')(sharded)
    for g, w in zip(got_grad, want_grad):
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=1e-4, atol=1e-6)


def test_inlier_ntxent_matches_numpy(zs):
    """Table 4's "None": contrastive learning on the inlier views alone."""
    z1, z2 = zs[:2]
    got = losses.inlier_ntxent(jnp.asarray(z1), jnp.asarray(z2), 0.5)
    np.testing.assert_allclose(got, ntxent_numpy(z1, z2, tau=0.5), rtol=1e-5)
