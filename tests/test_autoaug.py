"""AutoAugOOD: the divergence, the softmax, the pipeline on real digits, and its cache."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from unode_jax.configs import digits
from tests import children
from unode_jax.augment import autoaug, embedders, transforms as transforms_lib
from unode_jax.data.registry import load_dataset
from unode_jax.data.splits import one_class_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'clip', 'rn_tiny_jit.pt')


def _gauss(grid, mu, sigma):
    return np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def test_symmetric_kl_is_the_numpy_formula_and_the_known_gaussian_value():
    rng = np.random.default_rng(0)
    p, q = rng.random(50) + 0.1, rng.random(50) + 0.1
    pn, qn = p / p.sum(), q / q.sum()
    want = np.sum(pn * np.log(pn / qn)) + np.sum(qn * np.log(qn / pn))
    assert autoaug.symmetric_kl(p, q) == pytest.approx(want, rel=1e-9)
    assert autoaug.symmetric_kl(p, p) == pytest.approx(0.0, abs=1e-12)
    # N(0, 1) vs N(1, 1): KL = (mu1 - mu2)^2 / 2 each way, so J = 1.
    grid = np.linspace(-12, 13, 20001)
    assert autoaug.symmetric_kl(_gauss(grid, 0, 1), _gauss(grid, 1, 1)) == pytest.approx(1, abs=1e-6)
    # N(0, 1) vs N(0, 1.5^2): KL = log s + 1 / (2 s^2) - 1/2 and -log s + s^2 / 2 - 1/2.
    s = 1.5
    want = np.log(s) + 1 / (2 * s**2) - 0.5 + (-np.log(s) + s**2 / 2 - 0.5)
    assert autoaug.symmetric_kl(_gauss(grid, 0, 1), _gauss(grid, 0, s)) == pytest.approx(
        want, abs=1e-5)  # the 1e-12 density floor costs ~4e-6 in the tails


def test_jensen_shannon_is_the_numpy_formula_bounded_and_ordered():
    rng = np.random.default_rng(0)
    p, q = rng.random(50) + 0.1, rng.random(50) + 0.1
    pn, qn = p / p.sum(), q / q.sum()
    m = (pn + qn) / 2
    want = (np.sum(pn * np.log(pn / m)) + np.sum(qn * np.log(qn / m))) / (2 * np.log(2))
    assert autoaug.jensen_shannon(p, q) == pytest.approx(want, rel=1e-9)
    assert autoaug.jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-12)
    # Disjoint supports: exactly 1 (log 2 before the normalisation), no floor involved;
    # the Jeffreys divergence is finite there too, but set by its 1e-12 floor.
    a, b = np.r_[np.ones(10), np.zeros(10)], np.r_[np.zeros(10), np.ones(10)]
    assert autoaug.jensen_shannon(a, b) == pytest.approx(1.0, abs=1e-12)
    # Jeffreys there, in closed form: floored at e = 1e-12, p is (1 + e) / S on its ten
    # points and e / S on q's, S = 10 + 20 e (q mirrored), so each KL is
    # 10 (1 + e - e) log((1 + e) / e) / S and J = 2 log(1 + 1 / e) / (1 + 2 e) = 55.262.
    # Float64 rounds each of the 20 terms a few times (~1e-16 relative each): rel=1e-13 is
    # over ten times the worst sum of those, and tight enough to see the floor's mass in S
    # (2 * 12 ln 10, with S = 10, is 2e-12 relative above). One KL alone (27.6), no
    # renormalisation (553) or another floor (1e-10: 46.05) are far outside.
    e = 1e-12
    assert autoaug.symmetric_kl(a, b) == pytest.approx(2 * np.log1p(1 / e) / (1 + 2 * e),
                                                       rel=1e-13)
    # Gaussians further apart diverge more, and JS stays below 1 while they overlap.
    grid = np.linspace(-12, 16, 20001)
    js = [autoaug.jensen_shannon(_gauss(grid, 0, 1), _gauss(grid, d, 1)) for d in (0.5, 1, 2, 4)]
    assert js == sorted(js) and 0 < js[0] and js[-1] < 1
    # N(0,1) vs N(1,1): JS = 0.1199 nats (numerical integration), / log 2.
    x = np.linspace(-12, 13, 200001)
    pp, qq = _gauss(x, 0, 1), _gauss(x, 1, 1)
    mm = (pp + qq) / 2
    want = 0.5 * np.trapezoid(pp * np.log(pp / mm) + qq * np.log(qq / mm), x) / np.log(2)
    assert js[1] == pytest.approx(want, rel=1e-4)


def test_weights_entropy_and_divergence_options():
    assert autoaug.entropy([1, 0, 0]) == pytest.approx(0)
    assert autoaug.entropy([1, 1, 1, 1]) == pytest.approx(np.log(4))
    rng = np.random.default_rng(2)
    p = rng.normal(0, 1, 500)
    qs = [rng.normal(d, 1, 500) for d in (0.5, 3, 30)]
    j_js, *_ = autoaug.divergences_1d(p, qs, divergence='js')
    j_jk, *_ = autoaug.divergences_1d(p, qs, divergence='jeffreys')
    assert list(np.argsort(j_js)) == list(np.argsort(j_jk)) == [0, 1, 2]
    assert j_js.max() <= 1 and j_jk.max() > 20
    # Jeffreys on separated sets: one-hot weights; JS keeps every transform in play.
    assert autoaug.entropy(autoaug.softmax_weights(j_jk)) < 0.01
    assert autoaug.entropy(autoaug.softmax_weights(j_js)) > 0.9
    with pytest.raises(ValueError, match='divergence'):
        autoaug.divergences_1d(p, qs, divergence='kl')


@pytest.mark.slow
def test_random_cnn_embedder_is_seeded_and_sees_structure(digit_threes):
    emb = embedders.RandomCNNEmbedder(seed=0, batch_size=16)  # resnet18_cifar_w16
    x = digit_threes[:20]
    h = emb(x)
    assert h.shape == (20, 128) and np.isfinite(h).all()
    # Seeded: the same program on the same images gives the same bits.
    np.testing.assert_array_equal(embedders.RandomCNNEmbedder(seed=0, batch_size=16)(x), h)
    # Another batch size is another compiled program: XLA:CPU may sum each convolution's
    # ~10^3 products in another order (seen: 4.8e-7 on an AVX2-only CPU, 0 with AVX-512).
    # float32's rounding of such sums over the network's ~20 layers stays within ~10 ulps
    # of the largest feature (~1.2): 1e-5 of it is ~80 ulps.
    other = embedders.RandomCNNEmbedder(seed=0, batch_size=7)(x)
    np.testing.assert_allclose(other, h, rtol=0, atol=1e-5 * np.abs(h).max())
    assert not np.allclose(embedders.RandomCNNEmbedder(seed=1, batch_size=16)(x), h)
    assert emb.description['name'] == 'random_cnn'


def test_kde_divergence_of_two_gaussian_samples_is_close_to_the_true_value():
    rng = np.random.default_rng(1)
    p = rng.normal(0, 1, 20000)
    qs = [rng.normal(1, 1, 20000), rng.normal(0, 1, 20000), rng.normal(2, 1, 20000)]
    j, grid, pd, qd = autoaug.divergences_1d(p, qs, grid_size=1024)
    # J(N(0,1) || N(d,1)) = d^2. KDE smoothing widens both densities by the bandwidth
    # (~0.14 here, J = d^2 / (1 + h^2)), while the KDEs' light tails beyond the last
    # samples inflate J for far-apart sets.
    assert j[0] == pytest.approx(1.0, abs=0.05)
    assert j[1] < 0.01  # the same distribution
    assert j[2] == pytest.approx(4.0, rel=0.05)
    assert pd.sum() == pytest.approx(1) and np.allclose(qd.sum(1), 1)
    assert grid.shape == (1024,) and grid[0] < p.min() and grid[-1] > qs[2].max()


def test_softmax_weights_follow_the_divergences():
    j = np.array([0.3, 2.0, 0.0, 1.1])
    for tau in (0.5, 1.0, 4.0):
        w = autoaug.softmax_weights(j, tau)
        np.testing.assert_allclose(w, np.exp(j / tau) / np.exp(j / tau).sum(), rtol=1e-12)
        assert list(np.argsort(w)) == list(np.argsort(j))
    # A larger tau flattens the weights toward uniform.
    assert np.ptp(autoaug.softmax_weights(j, 10.0)) < np.ptp(autoaug.softmax_weights(j, 1.0))
    # Huge divergences do not overflow.
    assert np.isfinite(autoaug.softmax_weights([1e4, 0.0])).all()


def test_tau_sets_the_strength_of_the_weights_from_one_hot_to_uniform():
    # js lies in [0, 1], so at tau = 1 no weight can exceed another more than e times:
    # w_a / w_b = exp((j_a - j_b) / tau) exactly. tau is the knob that lets the divergence
    # count more (near one-hot as tau -> 0) or less (uniform as tau -> infinity).
    j = np.array([0.9, 0.2, 0.55, 0.0, 0.3])
    taus = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 100.0)
    ws = [autoaug.softmax_weights(j, tau) for tau in taus]
    for tau, w in zip(taus, ws):
        np.testing.assert_allclose(w.max() / w.min(), np.exp(np.ptp(j) / tau), rtol=1e-9)
        assert int(np.argmax(w)) == 0  # The ranking never depends on tau.
    h = [autoaug.entropy(w) for w in ws]
    assert all(a < b for a, b in zip(h, h[1:]))  # Entropy rises with tau...
    assert h[0] < 1e-10 and ws[0][0] > 1 - 1e-10  # ...from one-hot (the largest j)...
    assert h[-1] > np.log(len(j)) - 1e-4  # ...to uniform.
    np.testing.assert_allclose(ws[-1], 1 / len(j), atol=2e-3)
    # At tau = 1 the default's bound: at most e times apart, whatever the data.
    assert ws[taus.index(1.0)].max() / ws[taus.index(1.0)].min() <= np.e


@pytest.fixture(scope='module')
def digit_threes():
    ds = load_dataset('digits', image_size=32)
    x, _, _ = one_class_split(ds, 3)
    return x


def test_identity_gets_the_smallest_divergence(digit_threes):
    fns = transforms_lib.TRANSFORM_FNS
    transforms = {'identity': lambda key, x, partner: x, 'rotation': fns['rotation'],
                  'sobel': fns['sobel'], 'cutperm': fns['cutperm']}
    r = autoaug.autoaug_weights(digit_threes, transforms, embedders.PixelEmbedder(16), seed=0,
                                log=lambda *a: None)
    j = dict(zip(r['transforms'], r['divergences']))
    assert j['identity'] == min(j.values()) and j['identity'] < 0.5, j
    assert min(j['rotation'], j['sobel'], j['cutperm']) > 1.0, j
    assert r['weights'][0] == min(r['weights']) and sum(r['weights']) == pytest.approx(1)
    assert r['n'] == len(digit_threes)
    assert np.array(r['density_transformed']).shape == (4, r['grid_size'])


def test_transform_images_uses_the_training_transform_deterministically(digit_threes):
    import jax
    x = digit_threes[:8]
    key = jax.random.key(3)
    a = autoaug.transform_images(transforms_lib.TRANSFORM_FNS['rotation'], key, x, x[::-1])
    b = autoaug.transform_images(transforms_lib.TRANSFORM_FNS['rotation'], key, x, x[::-1])
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == x.shape
    for img, out in zip(x, a):  # an exact rotation by 90, 180 or 270 degrees
        assert any(np.array_equal(np.rot90(img, k), out) for k in (1, 2, 3))


def test_tsne_backends(monkeypatch):
    x = np.concatenate([np.zeros((40, 5)), np.full((40, 5), 4.0)])
    x += np.random.default_rng(0).normal(0, 0.1, x.shape)
    y = autoaug.tsne_1d(x, seed=0)  # scikit-learn, the default
    np.testing.assert_array_equal(y, autoaug.tsne_1d(x, seed=0))  # seeded
    # Neighbours in 1-D are neighbours in 5-D: the nearest point is of the same cluster.
    d = np.abs(y[:, None] - y[None, :]) + np.eye(80) * 1e9
    same = (np.argmin(d, 1) < 40) == (np.arange(80) < 40)
    assert same.mean() > 0.95 and y.shape == (80,)
    monkeypatch.setitem(sys.modules, 'openTSNE', None)  # not installed
    with pytest.raises(ImportError, match='pip install openTSNE'):
        autoaug.tsne_1d(x, backend='opentsne')
    with pytest.raises(ValueError, match='autoaug.tsne'):
        autoaug.tsne_1d(x, backend='umap')


def test_subset_is_seeded_and_sorted():
    a = autoaug.subset_indices(100, 10, seed=0)
    assert list(a) == sorted(a) and len(set(a)) == 10
    np.testing.assert_array_equal(a, autoaug.subset_indices(100, 10, seed=0))
    assert not np.array_equal(a, autoaug.subset_indices(100, 10, seed=1))
    np.testing.assert_array_equal(autoaug.subset_indices(5, 0, seed=0), np.arange(5))


def _config():
    config = digits.get_config()
    config.negatives.transforms = ('rotation', 'sobel', 'mixup')
    config.autoaug.num_images = 40
    config.autoaug.embedder = 'pixels'  # no network to build: fast
    return config


def test_class_weights_are_cached_and_recomputed_when_the_data_changes(tmp_path, digit_threes,
                                                                       monkeypatch):
    config = _config()
    embedder = embedders.make_embedder(config)
    calls = []
    real = autoaug.autoaug_weights
    monkeypatch.setattr(autoaug, 'autoaug_weights', lambda *a, **k: calls.append(1) or real(*a, **k))
    lines = []
    w, result = autoaug.class_weights(config, str(tmp_path), digit_threes, embedder,
                                      log=lines.append)
    assert len(calls) == 1 and w.dtype == np.float32 and w.sum() == pytest.approx(1)
    saved = json.loads((tmp_path / 'autoaug.json').read_text())
    assert saved['embedder']['name'] == 'pixels' and saved['n'] == 40
    assert saved['transforms'] == list(config.negatives.transforms)
    assert saved['n_available'] == len(digit_threes) and len(saved['fingerprint']) == 64
    assert (tmp_path / 'autoaug.png').stat().st_size > 1000
    assert 'j_k' in lines[-1] and 'rotation' in lines[-1] and 'entropy' in lines[-1]
    assert saved['entropy'] == pytest.approx(autoaug.entropy(saved['weights']))
    assert saved['divergence'] == config.autoaug.divergence

    w2, _ = autoaug.class_weights(config, str(tmp_path), digit_threes, embedder, log=lines.append)
    assert len(calls) == 1 and np.array_equal(w, w2) and '(cached)' in lines[-1]

    changed = digit_threes.copy()
    changed[0, 0, 0, 0] ^= 1  # one pixel
    autoaug.class_weights(config, str(tmp_path), changed, embedder, log=lines.append)
    assert len(calls) == 2
    config.autoaug.tau = 2.0  # a setting
    autoaug.class_weights(config, str(tmp_path), changed, embedder, log=lines.append)
    assert len(calls) == 3
    config.negatives.transforms = ('rotation', 'mixup')  # the transform set
    w3, _ = autoaug.class_weights(config, str(tmp_path), changed, embedder, log=lines.append)
    assert len(calls) == 4 and w3.shape == (2,)


def test_outlier_partners_are_used_for_mixup(tmp_path, digit_threes):
    config = _config()
    config.negatives.transforms = ('mixup',)
    config.negatives.mixup_lam = (0.0, 0.0)  # the output is the partner itself
    white = np.full((3, 32, 32, 3), 255, np.uint8)
    seen = []

    def embed(images, progress=False):
        seen.append(images)
        return embedders.PixelEmbedder(8)(images)

    embed.description = dict(name='spy')
    autoaug.class_weights(config, str(tmp_path), digit_threes, embed, outliers=white,
                          log=lambda *a: None)
    mixed = seen[0][40:]
    assert (mixed == 255).all()


@pytest.mark.slow
def test_training_with_clip_weights_computes_and_uses_them(tmp_path):
    """As `launch.py --config=configs/cifar10.py --config.autoaug.clip_weights=RN50.pt`,
    on digits with a tiny traced CLIP ResNet (a TorchScript archive like RN50.pt)."""
    from unode_jax.run import run
    from unode_jax.torch_io import weights as torch_weights
    weights_file = tmp_path / 'tiny_clip.pt'
    shutil.copyfile(CLIP_FIXTURE, weights_file)
    config = digits.get_config()
    config.data.normal_class = 3
    config.negatives.transforms = ('rotation', 'cutout', 'mixup')
    config.autoaug.embedder = 'clip'
    config.autoaug.clip_weights = str(weights_file)
    config.autoaug.num_images = 60
    config.optim.num_epochs = 1
    config.progress_bar = False
    summary = run(config, str(tmp_path / 'run'))
    found = json.loads((tmp_path / 'run' / 'autoaug.json').read_text())
    assert found['embedder']['name'] == 'clip' and found['n'] == 60
    assert found['embedder']['sha256'] == torch_weights.sha256_file(weights_file)
    assert found['embedder']['resolution'] == 64  # read from the checkpoint
    result = summary['classes']['3']
    assert result['autoaug_embedder'] == found['embedder']
    assert summary['autoaug_embedder']['name'] == 'clip'
    assert result['negative_weights_source'] == 'auto'
    assert list(result['negative_weights'].values()) == pytest.approx(found['weights'])


def test_missing_clip_weights_stop_the_run_before_training(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, 'launch.py'),
           '--config=' + os.path.join(ROOT, 'configs/digits.py'), f'--workdir={tmp_path / "w"}',
           '--config.autoaug.embedder=clip', '--config.autoaug.download=False',
           f'--config.autoaug.cache_dir={tmp_path / "cache"}']
    r = children.run(cmd)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error:') and 'RN50.pt' in last and 'clip_weights' in last, last
    assert 'https://openaipublic.azureedge.net/clip/models/' in last
    assert not (tmp_path / 'w' / 'class_0').exists()  # nothing trained


class _StopBeforeTraining(Exception):
    pass


def test_autoaug_never_reads_the_test_images(tmp_path, monkeypatch):
    """Runs on two .npz datasets that differ only in x_test (digits vs noise) write the same
    autoaug.json, and the embedder never sees a test image; a changed training image does
    change the weights (the comparison can see a difference)."""
    from tests.tiny_config import tiny_config
    from unode_jax.run import run
    from unode_jax.training import train as train_lib
    ds = load_dataset('digits', image_size=16)
    noise = np.random.default_rng(0).integers(0, 256, ds.x_test.shape, dtype=np.uint8)
    changed_train = ds.x_train.copy()
    changed_train[ds.y_train == 3] = changed_train[ds.y_train == 3][::-1]  # reordered
    changed_train[np.flatnonzero(ds.y_train == 3)[:20]] //= 2  # and 20 images darker
    seen = []
    make = embedders.make_embedder

    def spy_embedder(config):
        inner = make(config)

        def embed(images, progress=False):
            seen.append(np.asarray(images))
            return inner(images, progress)

        embed.description = inner.description
        return embed

    def stop(*args, **kwargs):
        raise _StopBeforeTraining

    monkeypatch.setattr(embedders, 'make_embedder', spy_embedder)
    monkeypatch.setattr(train_lib, 'train', stop)  # AutoAugOOD runs just before training
    found = {}
    for name, x_train, x_test in (('clean', ds.x_train, ds.x_test),
                                  ('poisoned', ds.x_train, noise),
                                  ('train_changed', changed_train, ds.x_test)):
        path = tmp_path / f'{name}.npz'
        np.savez(path, x_train=x_train, y_train=ds.y_train, x_test=x_test, y_test=ds.y_test)
        config = tiny_config(**{'data.name': 'arrays', 'data.path': str(path),
                                'data.normal_class': 3, 'negatives.weights': 'auto',
                                'negatives.transforms': ('rotation', 'sobel', 'cutout', 'mixup'),
                                'autoaug.embedder': 'pixels', 'autoaug.num_images': 40})
        seen.clear()
        # One OpenMP thread: sklearn's t-SNE is ~100x slower when its threads share busy cores.
        with threadpool_limits(1), pytest.raises(_StopBeforeTraining):
            run(config, str(tmp_path / name), mode='train_eval')
        found[name] = json.loads((tmp_path / name / 'autoaug.json').read_text())
        if name == 'poisoned':
            test_rows = {img.tobytes() for img in noise}
            assert len(seen) == 1 and len(seen[0]) == 5 * 40
            assert not any(img.tobytes() in test_rows for img in seen[0])
    clean, poisoned = found['clean'], found['poisoned']
    for key in ('weights', 'divergences', 'fingerprint', 'density_original',
                'density_transformed', 'n', 'n_available'):
        assert clean[key] == poisoned[key], key  # exactly
    assert found['train_changed']['weights'] != clean['weights']
    assert found['train_changed']['fingerprint'] != clean['fingerprint']
