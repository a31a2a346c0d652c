"""The accuracy levers of issue 36, each against a numpy restatement: eq. (13) over the k
nearest neighbours, the test-time copies (CSI's transform ensemble weighted by AutoAugOOD),
the shift views, and the transform head (its targets, its term, its copies), end to end."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.tiny_config import tiny_config
from unode_jax import trained, validate
from unode_jax.augment import negatives, views
from unode_jax.augment.transforms import TRANSFORM_FNS
from unode_jax.evaluation import copies, predict, score
from unode_jax.evaluation.evaluate import embed
from unode_jax.runtime.errors import ConfigError
from unode_jax.training import train as train_lib
from unode_jax.training.train import device_batch, make_batch


def _top_k_mean(q, b, k, leave_one_out=False):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    sim = qn.astype(np.float64) @ bn.T
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    return np.sort(sim, axis=1)[:, ::-1][:, :k].mean(axis=1)


@pytest.mark.devices(4)
@pytest.mark.parametrize('m, n, k, n_dev', [(37, 300, 2, 1), (300, 1100, 5, 4), (5, 3, 5, 4)])
def test_knn_k_is_the_mean_of_the_k_largest_cosines(m, n, k, n_dev):
    rng = np.random.default_rng(k)
    q, b = rng.normal(size=(m, 12)), rng.normal(size=(n, 12))
    got = score.max_cosine_similarity(q, b, k=k, query_chunk=128, bank_chunk=128,
                                      devices=jax.local_devices()[:n_dev])
    # k is capped at the bank's rows (5 queries against 3 rows: the mean of all 3).
    np.testing.assert_allclose(got, _top_k_mean(q, b, min(k, n)), atol=2e-6)
    loo = score.leave_one_out_max_cosine(b, k=k, query_chunk=128, bank_chunk=128,
                                         devices=jax.local_devices()[:n_dev])
    np.testing.assert_allclose(loo, _top_k_mean(b, b, min(k, n - 1), True), atol=2e-6)
    # k = 1 is the paper's largest cosine, bit for bit the same program as before.
    np.testing.assert_array_equal(score.max_cosine_similarity(q, b, k=1),
                                  score.max_cosine_similarity(q, b))
    with pytest.raises(ValueError, match='k must be a positive integer'):
        score.max_cosine_similarity(q, b, k=0)


def test_copy_weights_follow_autoaugood_and_labels_the_head():
    transforms = ('rotation', 'sobel', 'mixup', 'blur')
    w = np.array([0.4, 0.3, 0.2, 0.1])
    names = ('rotation', 'blur')
    assert [(c.transform, c.turn) for c in copies.copy_list(names)] == [
        ('rotation', 1), ('rotation', 2), ('rotation', 3), ('blur', 0)]
    # v = K w_t / n_t: rotation's three turns share its weight, blur makes one copy.
    np.testing.assert_allclose(copies.copy_weights(names, transforms, 10 * w),
                               [4 * 0.4 / 3] * 3 + [4 * 0.1])
    np.testing.assert_allclose(copies.copy_weights(names, transforms, np.ones(4)),
                               [1 / 3] * 3 + [1.0])  # uniform: each transform weighs 1
    assert copies.copy_labels(names, transforms, 'binary').tolist() == [0, 0, 0, 0]
    assert copies.copy_labels(names, transforms, 'transform').tolist() == [0, 0, 0, 3]
    with pytest.raises(ValueError, match='makes no copy'):
        copies.copy_list(('mixup',))


def test_scores_with_copies_are_the_weighted_means_of_eq_13_and_14():
    rng = np.random.default_rng(3)
    C, v, label = 3, np.array([0.5, 2.0, 1.0]), np.array([0, 2, 1])
    bank = dict(z=rng.normal(size=(40, 6)), logits=rng.normal(size=(40, 3)), knn_k=2,
                copies=dict(z=rng.normal(size=(C, 40, 6)), logits=rng.normal(size=(C, 40, 3)),
                            weight=v, label=label))
    test = dict(z=rng.normal(size=(9, 6)), logits=rng.normal(size=(9, 3)),
                copies=dict(z=rng.normal(size=(C, 9, 6)), logits=rng.normal(size=(C, 9, 3))))

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))
    sim = (_top_k_mean(test['z'], bank['z'], 2) + sum(
        v[c] * _top_k_mean(test['copies']['z'][c], bank['copies']['z'][c], 2)
        for c in range(C))) / (1 + v.sum())
    # The transform head: log P(identity = last class | x), log P(right transform | copy).
    term = (log_softmax(test['logits'])[:, -1] + sum(
        v[c] * log_softmax(test['copies']['logits'][c])[:, label[c]] for c in range(C))) / (
        1 + v.sum())
    got = score.unode_scores(bank, test, balance='spread', head='transform', weight=0.7)
    np.testing.assert_allclose(got['sim'], sim, atol=2e-6)
    np.testing.assert_allclose(got['binary'], term, rtol=1e-12)
    np.testing.assert_allclose(got['score'], got['sim'] + 0.7 * term, rtol=1e-12)
    # spread matching reads the same terms on the reference images.
    assert score.score_weight(bank, 'spread', 'transform', reference=test, share=2.0) == (
        pytest.approx(2.0 * np.std(sim) / np.std(term), rel=1e-5))
    # The binary head's copies: the probability that the copy is a hard negative (class 0).
    b2 = dict(bank, logits=bank['logits'][:, :2], copies=dict(bank['copies'], label=np.zeros(3, int),
                                                               logits=bank['copies']['logits'][..., :2]))
    t2 = dict(test, logits=test['logits'][:, :2],
              copies=dict(z=test['copies']['z'], logits=test['copies']['logits'][..., :2]))
    p = lambda x: np.exp(log_softmax(x))  # noqa: E731
    want = (p(t2['logits'])[:, 1] + sum(v[c] * p(t2['copies']['logits'][c])[:, 0]
                                        for c in range(C))) / (1 + v.sum())
    np.testing.assert_allclose(score.head_terms(b2, t2, 'binary'), want, rtol=1e-12)
    with pytest.raises(ValueError, match='knn_k = 1'):
        score.unode_scores(bank, test, balance='authors', weight=1.0)


def test_random_shift_moves_the_whole_image_within_its_bound():
    x = jnp.asarray(np.random.default_rng(0).random((16, 16, 3)), jnp.float32)
    padded = np.pad(np.asarray(x), ((2, 2), (2, 2), (0, 0)), mode='reflect')
    seen = set()
    for i in range(40):
        out = np.asarray(views.random_shift(jax.random.key(i), x, 2))
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(out, padded[dy:dy + 16, dx:dx + 16])]
        assert hits, 'not a shift of the reflected image by at most 2 px'
        seen.add(hits[0])
    assert len(seen) > 10  # the shifts vary
    flipped = [np.asarray(views.random_shift(jax.random.key(i), x, 0, flip=True))
               for i in range(10)]
    assert any(np.array_equal(f, np.asarray(x)[:, ::-1]) for f in flipped)
    assert any(np.array_equal(f, np.asarray(x)) for f in flipped)


def test_negative_batch_names_the_transform_it_applied():
    names = ('rotation', 'sobel', 'blur')
    x = jnp.asarray(np.random.default_rng(1).random((6, 8, 8, 3)), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 6)
    for w, want in (([0, 1, 0], 1), ([0, 0, 1], 2)):
        out, index = negatives.negative_batch(jax.random.key(1), keys, x, x, jnp.asarray(w, float),
                                              names=names, max_compose=1, with_index=True)
        assert np.asarray(index).tolist() == [want] * 6
        np.testing.assert_array_equal(out, negatives.negative_batch(
            jax.random.key(1), keys, x, x, jnp.asarray(w, float), names=names, max_compose=1))
    out, index = negatives.negative_batch(jax.random.key(1), keys, x, x, jnp.ones(3),
                                          names=names, mode='single', with_index=True)
    for i, t in enumerate(np.asarray(index)):  # each sample's own draw, and what it applied
        if names[t] != 'rotation':  # sobel and blur are deterministic
            k_apply = jax.random.split(keys[i])[1]
            np.testing.assert_allclose(out[i], TRANSFORM_FNS[names[t]](
                k_apply, x[i], x[i]), atol=1e-6)


def test_config_checks_of_the_head_and_the_copies():
    ok = tiny_config(**{'head.kind': 'transform', 'score.copies': ('rotation',),
                        'score.knn_k': 2})
    validate.validate_config(ok)
    bad = {
        'max_compose': ({'head.kind': 'transform', 'negatives.max_compose': 0}),
        'hard negatives': ({'head.kind': 'transform', 'negatives.weights': 'none'}),
        'not among negatives.transforms': ({'negatives.transforms': ('sobel',),
                                            'score.copies': ('rotation',)}),
        'is not one of': ({'score.copies': ('mixup',)}),
        'one view': ({'score.copies': ('rotation',), 'score.balance': 'appendix_c_norm'}),
        'integer >= 1': ({'score.knn_k': 0}),
    }
    for message, overrides in bad.items():
        with pytest.raises(ConfigError, match=message):
            validate.validate_config(tiny_config(**overrides))


@pytest.mark.slow
def test_transform_head_trains_on_the_transforms_and_predict_scores_as_evaluation(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    names = ('rotation', 'sobel', 'blur')
    config = tiny_config(**{'negatives.transforms': names, 'head.kind': 'transform',
                            'negatives.max_compose': 1, 'optim.num_epochs': 1,
                            'score.copies': ('rotation', 'sobel'), 'score.knn_k': 2,
                            'score.batch_size': 8})
    weights = np.array([0.2, 0.5, 0.3], np.float32)
    # The step's targets: the identity class K = 3 for the inlier views, each negative's
    # transform for the negatives (one-hot weights: every negative is a sobel).
    data = jax.tree.map(jnp.asarray, device_batch(*train_lib.training_arrays(config, images)[:2],
                                                  np.array([0, 1, 0], np.float32), images[:1],
                                                  n_valid=len(images)))
    assert int(data['targets'][0]) == 3
    _, _, transform = jax.jit(lambda *a: make_batch(config, *a), static_argnums=(4,))(
        jax.random.key(0), jnp.int32(0), data, jnp.arange(4), 8)
    assert np.asarray(transform).tolist() == [1] * 8
    directory = str(tmp_path / 'run')
    state = train_lib.train(config, directory, images, weights)
    assert state.params['head']['kernel'].shape[-1] == len(names) + 1
    bank, weight, _ = trained.make_bank(state, config, directory, images[:16], images[16:20],
                                        None, weights)
    np.testing.assert_allclose(bank['copies']['weight'],
                               copies.copy_weights(('rotation', 'sobel'), names, weights))
    assert bank['copies']['z'].shape[:2] == (4, 16) and bank['knn_k'] == 2
    with pytest.raises(ConfigError, match='autoaug.json'):  # weights unknown: no uniform guess
        trained.make_bank(state, config, directory, images[:16], images[16:20], None, None)
    # The copies are keyed by each image's row in its set: any batch size, the same copies.
    small = embed(state, images[20:], config)
    config.score.batch_size = 2
    np.testing.assert_allclose(embed(state, images[20:], config)['copies']['z'],
                               small['copies']['z'], atol=1e-5)
    config.score.batch_size = 8
    x = images[20:]
    want = score.unode_scores(bank, embed(state, x, config), 'spread', 'transform', weight)
    # predict's door: bank.npz read back, the model restored from its checkpoint.
    saved = predict.load_bank(directory)
    assert saved['knn_k'] == 2 and set(saved['copies']) == {'z', 'logits', 'weight', 'label'}
    loaded = trained.load_trained(config, directory, 16)
    assert loaded.head == 'transform'
    got = loaded.scores(x, config)
    np.testing.assert_allclose(got['score'], want['score'], rtol=1e-6, atol=1e-6)
    rotated = copies.make_copy(jnp.asarray(x, jnp.float32), 0, copies.copy_list(('rotation',))[1])
    np.testing.assert_array_equal(rotated, np.rot90(x, 2, axes=(1, 2)).astype(np.float32))
    assert os.path.exists(os.path.join(directory, predict.BANK_FILE))
    config.score.copies = ()
    with pytest.raises(ConfigError, match='other evaluation settings'):  # not this config's
        trained.load_trained(config, directory, 16)


def test_one_view_is_the_first_half_of_the_pair_and_trains_on_l_ce_alone(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    names = ('rotation', 'sobel')
    pair = tiny_config(**{'negatives.transforms': names, 'loss.con_weight': 0.0})
    one = tiny_config(**{'negatives.transforms': names, 'loss.con_weight': 0.0,
                         'views.num_views': 1, 'optim.num_epochs': 1})
    data = jax.tree.map(jnp.asarray, device_batch(*train_lib.training_arrays(pair, images)[:2],
                                                  np.array([0.5, 0.5], np.float32), images[:1],
                                                  n_valid=len(images)))
    args = (jax.random.key(0), jnp.int32(3), data, jnp.arange(8), 8)
    rows2, idx2, t2 = make_batch(pair, *args)
    rows1, idx1, t1 = make_batch(one, *args)
    # The same images, negatives and view draws: [t(x), t(G(x))] of the pair's four blocks.
    assert rows1.shape[0] == 16 and rows2.shape[0] == 32
    np.testing.assert_array_equal(rows1, rows2[:16])
    np.testing.assert_array_equal(idx1, idx2)
    np.testing.assert_array_equal(t1, t2[:8])
    train_lib.train(one, str(tmp_path), images, np.array([0.5, 0.5], np.float32))
    rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
    assert rows and all(r['loss_con'] == 0 and np.isfinite(r['loss_ce']) for r in rows)
    with pytest.raises(ConfigError, match='num_views=1'):
        validate.validate_config(tiny_config(**{'views.num_views': 1}))
