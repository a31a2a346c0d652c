"""Scoring (eq. 13-15) against numpy brute force, and the balancing weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unode_jax.evaluation import knn, metrics, score
from unode_jax.training.losses import l2_normalize


def brute_force(q, bank):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    return (qn @ bn.T).max(axis=1)


@pytest.mark.parametrize('m, n, qc, bc', [(37, 101, 16, 32), (5, 3, 1024, 8192), (64, 64, 64, 64)])
def test_max_cosine_similarity_matches_brute_force(m, n, qc, bc):
    rng = np.random.default_rng(m + n)
    q = rng.normal(size=(m, 12)) * rng.uniform(0.1, 10, size=(m, 1))  # unnormalised rows
    bank = rng.normal(size=(n, 12)) * rng.uniform(0.1, 10, size=(n, 1))
    got = score.max_cosine_similarity(q, bank, query_chunk=qc, bank_chunk=bc)
    assert got.shape == (m,) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force(q, bank), atol=1e-5)


def _unnormalised(rng, n, d):
    return (rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))).astype(np.float32)


@pytest.mark.parametrize('n_dev', [1, pytest.param(4, marks=pytest.mark.devices(4))])
@pytest.mark.parametrize('m, n, qc, bc', [(1037, 3001, 128, 128), (129, 2049, 1024, 8192),
                                          (3, 517, 2, 64)])
def test_max_cosine_similarity_sharded_matches_brute_force(m, n, qc, bc, n_dev):
    rng = np.random.default_rng(m * n)
    q, bank = _unnormalised(rng, m, 24), _unnormalised(rng, n, 24)
    bank -= 5 * q.mean(0)  # mostly negative cosines: padding rows must not win the max
    got = score.max_cosine_similarity(q, bank, query_chunk=qc, bank_chunk=bc,
                                      devices=jax.local_devices()[:n_dev])
    assert got.shape == (m,) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force(q, bank), atol=1e-5)


@pytest.mark.devices(4)
def test_max_cosine_similarity_one_and_four_devices_agree():
    assert len(jax.local_devices()) >= 4, 'tests/conftest.py sets 4 fake CPU devices'
    rng = np.random.default_rng(7)
    q, bank = _unnormalised(rng, 301, 32), _unnormalised(rng, 5003, 32)
    one, four = (score.max_cosine_similarity(q, bank, query_chunk=64, bank_chunk=256,
                                             devices=jax.local_devices()[:k]) for k in (1, 4))
    # Every device computes the same 64 x 256 tiles, so the values have been bit for bit
    # equal on every CPU tried; but 1 and 4 devices are two compiled programs, which XLA
    # may round differently: a float32 cosine of unit vectors, D = 32 products summed, moves
    # by at most about D * 2^-24 = 1.9e-6 with the order of the sum, and as much again with
    # the normalisation's. A padded row or a lost shard would be off by far more.
    np.testing.assert_allclose(one, four, rtol=0, atol=4e-6)


@pytest.mark.devices(4)
def test_max_cosine_similarity_compiles_once_per_shape():
    devices = tuple(jax.local_devices()[:4])
    rng = np.random.default_rng(8)
    mesh = knn._mesh(devices)
    caches = (knn._block_max_fn(mesh, False, 1), knn._block_max_fn(mesh, True, 1),
              knn._normalize)
    start = [f._cache_size() for f in caches]
    for m, n in [(300, 1000), (1000, 2500), (257, 4099), (5000, 300)]:
        # D = 20 is used by no other test: each program compiles once, at its first use.
        got = score.max_cosine_similarity(_unnormalised(rng, m, 20), _unnormalised(rng, n, 20),
                                          query_chunk=256, bank_chunk=256, devices=devices)
        assert got.shape == (m,)
        added = [f._cache_size() - s for f, s in zip(caches, start)]
        # 1,000 rows: one padded block (masked); 2,500: two full blocks of 1,024 (plain) first.
        assert added == ([0, 1, 2] if (m, n) == (300, 1000) else [1, 1, 2])


@pytest.mark.devices(4)
def test_full_blocks_skip_the_mask_and_keep_its_values():
    """A plain search's full bank blocks go to the tile program without the mask; the last,
    padded block and every leave-one-out block to the masked one. Both take the same
    products (one dot of the same tiles), so the maxima agree to float32 rounding of the
    D = 32 sum (as the 1-and-4-devices test argues: 4e-6)."""
    devices = tuple(jax.local_devices()[:4])
    mesh = knn._mesh(devices)
    rng = np.random.default_rng(11)
    by_bank = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('bank'))
    q = l2_normalize(jnp.asarray(_unnormalised(rng, 64, 32)))
    b = jax.device_put(l2_normalize(jnp.asarray(_unnormalised(rng, 4 * 128, 32))), by_bank)

    def block_max(masked):  # A full block (512 valid rows), no query among the bank's rows.
        best = jax.device_put(np.full((4, 64, 1), -np.inf, np.float32), by_bank)
        return np.asarray(knn._block_max_fn(mesh, masked)(
            q, b, jnp.int32(512), best, jnp.int32(-10_000), jnp.int32(0)))

    plain, masked = block_max(False), block_max(True)
    np.testing.assert_allclose(plain, masked, rtol=0, atol=4e-6)
    np.testing.assert_allclose(plain.max(0)[:, 0], brute_force(np.asarray(q), np.asarray(b)),
                               atol=1e-5)


def test_max_cosine_similarity_large_bank():
    # 300,000 x 128 bank, tiled (one tile program for every size: the test above); its
    # speed is benchmarks/knn.py's, not a test's.
    rng = np.random.default_rng(9)
    bank = rng.standard_normal((300_000, 128), np.float32)
    q = rng.standard_normal((200, 128), np.float32)
    got = score.max_cosine_similarity(q, bank)
    np.testing.assert_allclose(got[:20], brute_force(q[:20], bank), atol=1e-5)


def test_max_cosine_similarity_rejects_bad_shapes():
    with pytest.raises(ValueError):
        score.max_cosine_similarity(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError):
        score.max_cosine_similarity(np.ones((3, 4)), np.ones((0, 4)))
    with pytest.raises(ValueError):
        score.max_cosine_similarity(np.ones((3, 4)), np.ones((3, 4)), bank_chunk=0)


def test_leave_one_out_excludes_self():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(score.leave_one_out_max_cosine(z), [np.sqrt(0.5)] * 3, atol=1e-6)
    assert score.leave_one_out_max_cosine(z[:1]).tolist() == [1.0]  # no other row


def test_leave_one_out_on_the_devices_is_the_numpy_restatement_across_tiles_and_devices():
    """The tiled kernel with each row's own column masked, over several query chunks and
    bank blocks (50 rows in chunks of 4, blocks of 8 rows per device), equals the direct
    N x N product with its diagonal removed; a duplicated row is another image (cosine 1).
    Float32 cosines of 16-d unit vectors: within 1e-6."""
    z = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    z[7] = 3 * z[31]  # the same direction: each is the other's nearest, cosine 1
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = zn.astype(np.float64) @ zn.T.astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    want = sim.max(axis=1)
    got = score.leave_one_out_max_cosine(z, query_chunk=4, bank_chunk=8)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert abs(got[7] - 1) < 1e-6 and abs(got[31] - 1) < 1e-6
    # The tile does not depend on the device count: the same bits on one device.
    one = score.leave_one_out_max_cosine(z, query_chunk=4, bank_chunk=8,
                                         devices=jax.local_devices()[:1])
    np.testing.assert_array_equal(one, got)
    # max_cosine_similarity of the bank against itself is 1 everywhere (no mask there).
    np.testing.assert_allclose(score.max_cosine_similarity(z, z, query_chunk=4, bank_chunk=8),
                               1.0, atol=1e-6)


def test_a_bank_s_leave_one_out_is_computed_once_for_every_balance(monkeypatch):
    calls = []
    real = score.leave_one_out_max_cosine
    monkeypatch.setattr(score, 'leave_one_out_max_cosine',
                        lambda z, k=1: calls.append(len(z)) or real(z, k=k))
    rng = np.random.default_rng(1)
    bank = dict(z=rng.normal(size=(20, 8)), logits=rng.normal(size=(20, 2)))
    weights = [score.score_weight(bank, b) for b in ('appendix_c', 'spread', 'appendix_c')]
    assert calls == [20] and weights[0] == weights[2]


def test_balance_weight_is_positive_and_bounded():
    # Whatever the training scores, lambda > 0 (the binary term never flips sign)
    # and lambda <= 1/floor (it never blows up).
    assert score.balance_weight(np.array([0.9]), np.array([0.5])) == pytest.approx(1.8)
    # max(mean sim, floor) / max(mean prob, floor) at floor 1e-3: a negative or zero cosine
    # scale over a zero probability is 1e-3 / 1e-3; a vanishing probability meets the bound
    # 1 / floor; a probability of 1 leaves the cosine's own scale. One float64 division:
    # within an ulp of these (rel=1e-15 is ~5 ulps).
    for sim, prob, want in [(-0.5, 0.0, 1.0), (0.0, 0.0, 1.0), (1.0, 1e-9, 1e3), (0.3, 1.0, 0.3)]:
        w = score.balance_weight(np.array([sim]), np.array([prob]), floor=1e-3)
        assert w == pytest.approx(want, rel=1e-15, abs=0), (sim, prob, w)


def test_unode_scores_equation_15():
    rng = np.random.default_rng(3)
    train = dict(z=rng.normal(size=(20, 8)), logits=rng.normal(size=(20, 2)))
    test = dict(z=rng.normal(size=(7, 8)), logits=rng.normal(size=(7, 2)))
    s = score.unode_scores(train, test)
    p_test = np.exp(test['logits'][:, 1]) / np.exp(test['logits']).sum(1)
    p_train = np.exp(train['logits'][:, 1]) / np.exp(train['logits']).sum(1)
    zn = train['z'] / np.linalg.norm(train['z'], axis=1, keepdims=True)
    loo = zn @ zn.T
    np.fill_diagonal(loo, -np.inf)
    lam = loo.max(1).mean() / p_train.mean()
    np.testing.assert_allclose(s['score'], brute_force(test['z'], train['z']) + lam * p_test,
                               rtol=1e-5)


@pytest.mark.parametrize('head', ['msp', 'not_negative'])
def test_labeled_head_terms_restated(head):
    """Appendix B.3: with a (K+1)-way head the binary term becomes the max softmax over
    the K inlier classes (or 1 - P(class K)); lambda balances it as before."""
    rng = np.random.default_rng(5)
    k = 4
    train = dict(z=rng.normal(size=(20, 8)), logits=rng.normal(size=(20, k + 1)))
    test = dict(z=rng.normal(size=(7, 8)), logits=rng.normal(size=(7, k + 1)))

    def term(logits):
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return p[:, :k].max(1) if head == 'msp' else 1 - p[:, k]

    zn = train['z'] / np.linalg.norm(train['z'], axis=1, keepdims=True)
    loo = zn @ zn.T
    np.fill_diagonal(loo, -np.inf)
    lam = loo.max(1).mean() / term(train['logits']).mean()
    s = score.unode_scores(train, test, head=head)
    np.testing.assert_allclose(s['binary'], term(test['logits']), rtol=1e-5)
    np.testing.assert_allclose(s['score'], brute_force(test['z'], train['z']) +
                               lam * term(test['logits']), rtol=1e-5)
    # A given lambda (predict's, saved with the bank) is used as it is.
    s2 = score.unode_scores(train, test, head=head, weight=2.0)
    np.testing.assert_allclose(s2['score'], s['sim'] + 2.0 * s['binary'], rtol=1e-6)
    with pytest.raises(ValueError, match='2-way'):
        score.unode_scores(train, test, head='binary')
    with pytest.raises(ValueError, match='binary head only'):
        score.unode_scores(train, test, balance='authors', head=head)


def test_authors_balance_restated():
    rng = np.random.default_rng(4)
    train = dict(z=rng.normal(size=(20, 8)), logits=rng.normal(size=(20, 2)) - [1.0, 0])
    test = dict(z=rng.normal(size=(7, 8)), logits=rng.normal(size=(7, 2)))
    s = score.unode_scores(train, test, balance='authors')
    zn = train['z'] / np.linalg.norm(train['z'], axis=1, keepdims=True)
    sim = (test['z'] @ zn.T).max(1) / np.linalg.norm(train['z'], axis=1).mean()
    want = sim + test['logits'][:, 0] / train['logits'][:, 0].mean()
    np.testing.assert_allclose(s['score'], want, rtol=1e-5)


def test_auroc_normal_is_positive():
    assert metrics.auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert metrics.auroc([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8]) == 0.0
    with pytest.raises(ValueError):
        metrics.auroc([1, 1], [0.1, 0.2])


def test_spread_balance_restated():
    """balance='spread': lambda = std(sim) / std(head term) on held-out normal images, or on
    the training bank (similarity leave-one-out) when none are held out."""
    rng = np.random.default_rng(6)
    train = dict(z=rng.normal(size=(30, 8)), logits=rng.normal(size=(30, 2)))
    held = dict(z=rng.normal(size=(9, 8)), logits=rng.normal(size=(9, 2)))
    test = dict(z=rng.normal(size=(7, 8)), logits=rng.normal(size=(7, 2)))

    def prob(logits):
        return np.exp(logits[:, 1]) / np.exp(logits).sum(1)

    lam = brute_force(held['z'], train['z']).std() / prob(held['logits']).std()
    assert score.score_weight(train, 'spread', reference=held) == pytest.approx(lam, rel=1e-5)
    # spread_share: the head's term gets that fraction of the similarity's spread.
    assert score.score_weight(train, 'spread', reference=held, share=0.1) == pytest.approx(
        0.1 * lam, rel=1e-5)
    zn = train['z'] / np.linalg.norm(train['z'], axis=1, keepdims=True)
    loo = zn @ zn.T
    np.fill_diagonal(loo, -np.inf)
    lam_train = loo.max(1).std() / prob(train['logits']).std()
    assert score.score_weight(train, 'spread') == pytest.approx(lam_train, rel=1e-5)
    s = score.unode_scores(train, test, 'spread', weight=lam)
    np.testing.assert_allclose(s['score'], brute_force(test['z'], train['z']) +
                               lam * prob(test['logits']), rtol=1e-5)
    # A constant head term cannot make lambda infinite.
    flat = dict(z=train['z'], logits=np.tile([[0.0, 30.0]], (30, 1)))
    # Every P(inlier) is the same: its std (0, or a rounding's 1e-17) is floored at 1e-6, so
    # lambda is the similarity's spread (lam_train's numerator, to its rel=1e-5) * 1e6, under
    # the cap of 1e6 (0.13 * 1e6 here). Unfloored, lambda would be inf, or the cap itself.
    assert score.score_weight(flat, 'spread') == pytest.approx(loo.max(1).std() / 1e-6,
                                                               rel=1e-5)


def test_binary_term_keeps_saturated_margins_apart():
    """Logit margins of 18-30: float32 rounds every P(inlier) to 1.0 (all tie), float64 keeps
    them ordered, so the binary term's AUROC can rank the most normal images."""
    margins = np.array([18.0, 22.0, 26.0, 30.0])
    logits = np.stack([np.zeros(4), margins], axis=1).astype(np.float32)
    f32 = np.asarray(jax.nn.softmax(logits, axis=-1))[:, 1]
    assert (f32 == 1.0).all() and metrics.ties_fraction(f32) == 1.0
    p = score.inlier_probability(logits)
    assert p.dtype == np.float64 and metrics.ties_fraction(p) == 0.0
    assert (np.diff(p) > 0).all()
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-margins)), rtol=0, atol=1e-15)
    # Eq. (14) as a restatement, and the normal images ranked above outliers with margin 10.
    is_normal = np.array([True] * 4 + [False] * 4)
    both = np.concatenate([logits, np.stack([np.zeros(4), np.full(4, 10.0)], 1)]).astype(np.float32)
    assert metrics.auroc(is_normal, score.head_term(both)) == 1.0
    assert metrics.ties_fraction(score.head_term(both)) == 0.5  # the four outliers tie


def test_ties_fraction():
    assert metrics.ties_fraction([]) == 0.0
    assert metrics.ties_fraction([0.1, 0.2, 0.3]) == 0.0
    assert metrics.ties_fraction([1.0, 1.0, 0.5, 0.2, 0.2]) == 0.8


def test_appendix_c_norm_balance_restated():
    """Appendix C's two steps literally: <z, z_m/|z_m|> + mean|z_train| / mean P_train * P."""
    rng = np.random.default_rng(5)
    train = dict(z=rng.normal(size=(20, 8)) * 3, logits=rng.normal(size=(20, 2)))
    test = dict(z=rng.normal(size=(7, 8)), logits=rng.normal(size=(7, 2)))
    s = score.unode_scores(train, test, balance='appendix_c_norm')
    zn = train['z'] / np.linalg.norm(train['z'], axis=1, keepdims=True)
    sim = (test['z'] @ zn.T).max(1)  # = |z| * the largest cosine
    p = lambda l: np.exp(l[:, 1]) / np.exp(l).sum(1)  # noqa: E731
    lam = np.linalg.norm(train['z'], axis=1).mean() / p(train['logits']).mean()
    np.testing.assert_allclose(s['weight'], lam, rtol=1e-6)
    np.testing.assert_allclose(s['sim'], sim, rtol=1e-5)
    np.testing.assert_allclose(s['score'], sim + lam * p(test['logits']), rtol=1e-5)
    # Sign-safe: a head that calls every training image a negative cannot flip or blow up
    # the binary term's weight.
    hostile = dict(train, logits=np.stack([np.full(20, 50.0), np.zeros(20)], 1))
    w = score.score_weight(hostile, 'appendix_c_norm')
    assert 0 < w <= np.linalg.norm(train['z'], axis=1).mean() / 1e-3


def test_pixel_features_in_batches_are_the_whole_set_resized_at_once():
    """baselines.pixel_features converts and resizes PIXEL_BATCH images at a time (bounded
    host memory); each image is resized alone either way, so the features are the same."""
    from unode_jax.evaluation import baselines
    rng = np.random.default_rng(0)
    n = baselines.PIXEL_BATCH + 5  # two batches, the second short
    big = rng.integers(0, 256, size=(n, 80, 80, 3), dtype=np.uint8)
    whole = np.asarray(jax.image.resize(big.astype(np.float32) / 255.0, (n, 64, 64, 3),
                                        'linear', antialias=True)).reshape(n, -1)
    np.testing.assert_allclose(baselines.pixel_features(big), whole, atol=1e-6)
    small = rng.integers(0, 256, size=(3, 16, 16, 1), dtype=np.uint8)  # not resized
    np.testing.assert_array_equal(baselines.pixel_features(small),
                                  small.reshape(3, -1).astype(np.float32) / 255.0)
