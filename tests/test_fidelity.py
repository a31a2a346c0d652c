"""The test-time ensemble and outlier exposure, each against a restatement built by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.tiny_config import tiny_config
from unode_jax.augment import views
from unode_jax.data.registry import load_dataset
from unode_jax.evaluation.evaluate import embed
from unode_jax.training.train import create_train_state, device_batch, make_batch


@pytest.fixture(scope='module')
def digits16():
    return load_dataset('digits', image_size=16)


@pytest.mark.slow
@pytest.mark.parametrize('features, out_key', [('encoder', 'feature'), ('projection', 'z')])
def test_test_time_ensemble_is_the_mean_of_t_hand_made_views(digits16, features, out_key):
    """score.ensemble = T: z and logits are the means over t < T of the model on the views
    keyed fold_in(key(t), chunk start), one split key per row of the padded chunk."""
    passes, bs = 3, 4
    config = tiny_config(**{'score.ensemble': passes, 'score.batch_size': bs,
                            'score.features': features, 'score.crop_area': 0.54})
    state = create_train_state(jax.random.key(1), config, 16)
    images = digits16.x_test[:10]  # chunks at 0, 4 and 8, the last padded with 2 blanks
    got = embed(state, images, config)

    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    apply = jax.jit(lambda x: state.apply_fn(variables, (x - 0.5) / 0.5, train=False))
    view = jax.jit(lambda keys, x: views.random_views(keys, x, flip=False, crop_area=0.54))
    want_z, want_logits = [], []
    for start in range(0, len(images), bs):
        chunk = np.zeros((bs, 16, 16, 3), np.uint8)
        chunk[:len(images[start:start + bs])] = images[start:start + bs]
        x = jnp.asarray(chunk, jnp.float32) / 255.0
        outs = []
        for t in range(passes):
            keys = jax.random.split(jax.random.fold_in(jax.random.key(t), start), bs)
            outs.append(apply(view(keys, x)))
        n = min(bs, len(images) - start)
        want_z.append(np.mean([np.asarray(o[out_key]) for o in outs], 0)[:n])
        want_logits.append(np.mean([np.asarray(o['logits']) for o in outs], 0)[:n])
        if start == 0:  # the views differ between passes, so the mean is not one view
            assert np.abs(np.asarray(outs[0][out_key]) - np.asarray(outs[1][out_key])).max() > 1e-3
    want_z, want_logits = np.concatenate(want_z), np.concatenate(want_logits)
    assert got['z'].shape == want_z.shape and got['logits'].shape == want_logits.shape
    np.testing.assert_allclose(got['z'], want_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['logits'], want_logits, rtol=1e-5, atol=1e-6)
    # Not the plain images: the ensemble changes the embeddings.
    plain = np.asarray(apply(jnp.asarray(images, jnp.float32) / 255.0)[out_key])
    assert np.abs(got['z'] - plain).max() > 1e-3


@pytest.mark.parametrize('per_view', [False, True])
def test_outlier_exposure_with_lam_0_makes_each_negative_its_keyed_outlier(digits16, per_view):
    """Mixup as the only transform, mixup_lam = (0, 0) and negatives.outliers set: each
    negative of make_batch is the outlier image drawn by randint from the sample's 7th key
    (step key fold_in(fold_in(key(seed), 1), step), then fold_in(global position), split 7)."""
    config = tiny_config(**{
        'negatives.transforms': ('mixup',), 'negatives.weights': 'mixup=1',
        'negatives.mixup_lam': (0.0, 0.0), 'negatives.outliers': 'outliers.npz',
        'negatives.per_view': per_view,
        # Views that leave the image as it is, so the negatives can be read off the batch.
        'views.flip': False, 'views.crop_scale': (1.0, 1.0), 'views.crop_ratio': (1.0, 1.0),
        'views.jitter_p': 0.0, 'views.gray_p': 0.0})
    inliers = digits16.x_train[digits16.y_train == 3][:24]
    outliers = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    g, step = config.batch_size, 5
    rng = jax.random.key(config.seed)
    positions = jnp.arange(g // 2, g)  # the second of two devices
    data = jax.tree.map(jnp.asarray, device_batch(inliers, np.ones(len(inliers), np.int32),
                                                  np.ones(1), outliers, n_valid=len(inliers)))
    build = jax.jit(lambda *a: make_batch(config, *a), static_argnums=(4,))
    batch, idx, _ = build(rng, jnp.int32(step), data, positions, g)
    batch, idx = np.asarray(batch), np.asarray(idx)
    b = len(positions)
    assert batch.shape == (4 * b, 16, 16, 3)
    x, neg1, x2, neg2 = np.split(batch, 4)
    np.testing.assert_allclose(x, inliers[idx] / 255.0, atol=1e-6)  # the views are identities
    np.testing.assert_allclose(x2, inliers[idx] / 255.0, atol=1e-6)

    step_key = jax.random.fold_in(jax.random.fold_in(rng, 1), step)
    picks = [int(jax.random.randint(jax.random.split(jax.random.fold_in(step_key, p), 7)[6],
                                    (), 0, len(outliers))) for p in np.asarray(positions)]
    assert len(set(picks)) > 1  # the check below tells the outliers apart
    want = outliers[picks] / 255.0
    np.testing.assert_allclose(neg1, want, atol=1e-6)
    np.testing.assert_allclose(neg2, want, atol=1e-6)
    # Each negative is its own outlier, not any other outlier nor an inlier.
    for n, p in zip(neg1, picks):
        dist = np.abs(n[None] - outliers / 255.0).max(axis=(1, 2, 3))
        assert np.argmin(dist) == p and np.sort(dist)[1] > 0.1
        assert np.abs(n[None] - inliers / 255.0).max(axis=(1, 2, 3)).min() > 0.1
