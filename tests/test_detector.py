"""The Python API (unode_jax.Detector): fit on arrays, scikit-learn's names (score_samples,
decision_function, predict, threshold_, decision_scores_, clone), load a workdir; the same
scores as the command line's --mode=predict; its errors."""
import csv
import gc
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from tests.tiny_config import tiny_config
from unode_jax import Detector
from unode_jax.data import images as images_lib
from unode_jax.data.splits import holdout_split
from unode_jax.detector import prepare_images
from unode_jax.run import run
from unode_jax.runtime.errors import ConfigError, error_line
from unode_jax.runtime.fingerprint import images_record

FAST = {'negatives.transforms': ('rotation', 'cutout', 'mixup'), 'negatives.weights': 'uniform',
        'predict.holdout': 0.2}


@pytest.fixture(scope='module')
def digits():
    """sklearn's 8 x 8 digits as uint8 (N, 8, 8): the API takes any size and no channel."""
    d = load_digits()
    return (d.images * 15).astype(np.uint8), d.target


@pytest.fixture(scope='module')
def fitted(digits, tmp_path_factory):
    x, y = digits
    workdir = tmp_path_factory.mktemp('api') / 'run'
    det = Detector(tiny_config(), str(workdir), **FAST).fit(x[y == 0])
    return det, str(workdir)


@pytest.mark.slow
def test_fit_score_and_is_novel(fitted, digits):
    det, workdir = fitted
    x, y = digits
    s = det.score_samples(x[:50])
    assert s.dtype == np.float64 and s.shape == (50,) and np.isfinite(s).all()
    terms = det.score_terms(x[:50])
    np.testing.assert_array_equal(terms['score'], s)
    np.testing.assert_array_equal(terms['score'], terms['sim'] + det.model_.weight * terms['binary'])
    # The threshold: the 0.05 quantile of the scores of the fifth of class 0's images held
    # out of training (predict.holdout = 0.2, seeded), scored here through the API: the
    # same program on the same images as the fit's own scoring, so the same bits.
    x0 = x[y == 0]
    fit, hold = holdout_split(len(x0), 0.2, det.get_config().seed)
    assert len(hold) == round(0.2 * len(x0)) and not set(fit) & set(hold)
    held = det.score_samples(x0[hold])
    np.testing.assert_array_equal(det.decision_scores_, held)
    assert det.threshold_ == det.offset_ == np.quantile(held, 0.05)
    # Novel: below the threshold, the fitted one or one given; scikit-learn's +1 / -1.
    np.testing.assert_array_equal(det.is_novel(x[:50]), s < det.threshold_)
    np.testing.assert_array_equal(det.predict(x[:50]), np.where(s < det.threshold_, -1, 1))
    np.testing.assert_array_equal(det.decision_function(x[:50]), s - det.threshold_)
    assert det.predict(x[:50]).dtype == np.int64
    middle = float(np.median(s))
    np.testing.assert_array_equal(det.is_novel(x[:50], threshold=middle), s < middle)
    assert det.is_novel(x[:50], threshold=middle).sum() == 25
    assert (det.predict(x[:50], threshold=middle) == -1).sum() == 25
    # Fitted: unseen normal images (the held-out 0s) score above novel ones (other digits).
    # Measured 0.9957 (tiny model, 2 epochs, 36 x 300 pairs) on an AVX-512 CPU; the floor
    # leaves 150 pairs' room for another CPU's rounding. The untrained network's similarity
    # alone does about as well on 8 x 8 digits (README), so this checks the direction and
    # the plumbing of the score, not training.
    novel = det.score_samples(x[y != 0][:300])
    auroc = roc_auc_score(np.r_[np.ones(len(held)), np.zeros(len(novel))], np.r_[held, novel])
    assert auroc > 0.98, auroc
    # scikit-learn's score(X, y): one number, the AUROC with the normal images (+1) positive.
    both = np.concatenate([x0[hold], x[y != 0][:300]])
    labels = np.r_[np.ones(len(held), int), -np.ones(300, int)]
    assert det.score(both, labels) == pytest.approx(auroc, abs=1e-12)
    with pytest.raises(ValueError, match='needs normal'):
        det.score(x0[hold], np.ones(len(held)))
    # [0, 1] floats: the same images, the same scores.
    np.testing.assert_array_equal(det.score_samples(x[:50] / 255.0), s)
    # A CLI-readable workdir: its config, checkpoint and bank.
    assert {'config.json', 'bank.npz', 'checkpoints'} <= set(os.listdir(workdir))


def test_load_scores_as_the_detector_that_trained_it(fitted, digits):
    det, workdir = fitted
    x, _ = digits
    loaded = Detector.load(workdir)
    np.testing.assert_array_equal(loaded.score_samples(x[:40]), det.score_samples(x[:40]))
    assert loaded.threshold_ == det.threshold_
    np.testing.assert_array_equal(loaded.decision_scores_, det.decision_scores_)
    # Evaluation fields may change on load, training fields may not.
    assert Detector.load(workdir, **{'predict.quantile': 0.5}).threshold_ == \
        np.quantile(det.decision_scores_, 0.5)
    with pytest.raises(ConfigError, match='optim.num_epochs: .* trained with its own value'):
        Detector.load(workdir, **{'optim.num_epochs': 3})
    # predict.holdout decides which images the model trained on: a training field.
    with pytest.raises(ConfigError, match='predict.holdout: .* trained with its own value'):
        Detector.load(workdir, **{'predict.holdout': 0.5})


def test_cli_predict_on_pngs_equals_the_api_on_the_decoded_images(fitted, digits, tmp_path):
    """--mode=predict on PNG files and Detector.load(...).score on the arrays decoded from
    them: one code path, the same scores (predictions.csv keeps 6 decimals)."""
    det, workdir = fitted
    x, _ = digits
    folder = tmp_path / 'new'
    folder.mkdir()
    for i in range(6):  # gray 8 x 8, and RGB at another size and aspect
        im = Image.fromarray(x[i])
        (im if i % 2 else im.convert('RGB').resize((20, 13))).save(folder / f'{i}.png')
    paths = sorted(str(p) for p in folder.iterdir())
    path, counts = run(det.get_config(), workdir, mode='predict', images=str(folder))
    assert counts['error'] == 0
    with open(path) as f:
        cli = {r['path']: r['score'] for r in csv.DictReader(f)}
    decoded = [np.asarray(Image.open(p)) for p in paths]
    api = [Detector.load(workdir).score_samples(d[None])[0] for d in decoded]
    assert [cli[p] for p in paths] == [f'{s:.6f}' for s in api]


def test_prepare_matches_the_folder_datasets_preparation(digits):
    x, _ = digits
    config = tiny_config()
    out = prepare_images(x[:300], config)  # one batched resize
    assert out.shape == (300, 16, 16, 3) and out.dtype == np.uint8
    for a, b in zip(out, x[:300]):
        np.testing.assert_array_equal(a, images_lib.prepare(b, 16))
    rgb = np.repeat(x[:3, :, :, None], 3, axis=-1)
    np.testing.assert_array_equal(prepare_images(rgb, config), out[:3])
    config.data.resize = 20  # shorter side to 20, then the centre 16 x 16: per image
    out = prepare_images(x[:5], config)
    for a, b in zip(out, x[:5]):
        np.testing.assert_array_equal(a, images_lib.prepare(b, 16, 20))


@pytest.mark.slow
def test_a_temporary_workdir_goes_with_the_detector(digits):
    x, y = digits
    det = Detector(tiny_config(), verbose=False, **FAST).fit(x[y == 1])
    folder = det.workdir_
    assert det.workdir is None  # the parameter, as passed
    assert os.path.isfile(os.path.join(folder, 'bank.npz'))
    del det
    gc.collect()
    assert not os.path.exists(folder)


def test_errors(digits, tmp_path):
    x, _ = digits
    config = tiny_config()
    # Parameters are read at fit (scikit-learn's convention), each error one sentence.
    with pytest.raises(ConfigError, match='override optim.no_such_field: no such config field'):
        Detector(config, **{'optim.no_such_field': 1}).fit(x[:20])
    with pytest.raises(ConfigError, match='override batch_size='):
        Detector(config, **{'batch_size': 'eight'}).get_config()
    with pytest.raises(ConfigError, match='no such file or packaged config'):
        Detector('configs/no_such.py').fit(x[:20])
    assert config.batch_size == 8  # the caller's config is not changed by overrides
    assert Detector(config, **{'batch_size': 4}).get_config().batch_size == 4
    assert config.batch_size == 8
    for method in ('score_samples', 'decision_function', 'predict', 'is_novel'):
        with pytest.raises(NotFittedError, match='not fitted'):
            getattr(Detector(config), method)(x[:2])
    with pytest.raises(NotFittedError):
        Detector(config).threshold_
    with pytest.raises(ValueError, match='uint8'):
        Detector(config).fit(x.astype(np.int32))
    with pytest.raises(ValueError):
        Detector(config).fit(x.astype(np.float32))  # floats beyond [0, 1]
    with pytest.raises(ConfigError, match='fewer than batch_size=8'):
        Detector(config, str(tmp_path / 'few')).fit(x[:5])
    with pytest.raises(ConfigError, match='no config.json'):
        Detector.load(str(tmp_path))


def test_a_config_file_by_path_from_another_directory(tmp_path, monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(tmp_path)
    det = Detector(os.path.join(root, 'configs', 'digits.py'), **{'optim.num_epochs': 1})
    assert det.get_config().data.name == 'digits' and det.get_config().optim.num_epochs == 1
    # A packaged config by its bare name, from any folder.
    assert Detector('digits').get_config().data.name == 'digits'
    assert Detector('faces.py').get_config().data.name == 'faces'


def _record(workdir):
    """The training record of a workdir's newest checkpoint."""
    from unode_jax.training.checkpoint import Checkpointer
    ckpt = Checkpointer(workdir, 2, create=False)
    try:
        return ckpt.latest_record()
    finally:
        ckpt.close()


def _fit_part(x, config):
    """The images a fit on x trains on: prepared, less predict.holdout's."""
    x = prepare_images(x, config)
    return x[holdout_split(len(x), config.predict.holdout, config.seed)[0]]


@pytest.mark.slow
def test_a_refit_in_a_temporary_folder_trains_a_new_model(digits):
    x, y = digits
    det = Detector(tiny_config(), **FAST).fit(x[y == 0])
    first, first_scores = det.workdir_, det.score_samples(x[:30])
    det.fit(x[y == 1])
    assert det.workdir_ != first and not os.path.exists(first)  # a new folder, the old gone
    want = images_record(_fit_part(x[y == 1], det.get_config()))
    assert _record(det.workdir_)['images'] == want
    np.testing.assert_array_equal(det.model_.x_fit, _fit_part(x[y == 1], det.get_config()))
    assert not np.array_equal(det.score_samples(x[:30]), first_scores)


@pytest.mark.slow
def test_a_refit_never_returns_the_model_of_other_images(fitted, digits, tmp_path):
    det, workdir = fitted
    x, y = digits
    bank = open(os.path.join(workdir, 'bank.npz'), 'rb').read()
    metrics = open(os.path.join(workdir, 'metrics.jsonl')).read()
    # The detector whose workdir you named, or one loaded from it: fit refuses, nothing run.
    for holder in (det, Detector.load(workdir)):
        with pytest.raises(ConfigError, match=f'this Detector holds the model in {workdir}'):
            holder.fit(x[y == 1])
    # A new Detector on that workdir with other images: one line, nothing written.
    with pytest.raises(ConfigError) as e:
        Detector(tiny_config(), workdir, **FAST).fit(x[y == 1])
    line = error_line(e.value)
    assert line.startswith(f'error: {workdir} holds a model trained on other images (') and \
        'train on these in a new workdir' in line and '\n' not in line, line
    # ... or other training fields: each named with both values.
    with pytest.raises(ConfigError, match=r'holds a model trained with other settings: '
                                          r'loss.ce_weight \(1.0 saved, 3.0 now\)'):
        Detector(tiny_config(), workdir, **dict(FAST, **{'loss.ce_weight': 3.0})).fit(x[y == 0])
    assert open(os.path.join(workdir, 'bank.npz'), 'rb').read() == bank
    assert open(os.path.join(workdir, 'metrics.jsonl')).read() == metrics
    # The same images and fields: the model there is theirs, resumed with no step trained.
    again = Detector(tiny_config(), workdir, **FAST).fit(x[y == 0])
    assert open(os.path.join(workdir, 'metrics.jsonl')).read() == metrics
    np.testing.assert_array_equal(again.score_samples(x[:20]), det.score_samples(x[:20]))


# scikit-learn's estimator checks that apply to an estimator of images; docs/usage.md lists
# the others (they fit 2-D tabular arrays, sparse matrices, ...) and why they do not apply.
SKLEARN_CHECKS = ('check_no_attributes_set_in_init', 'check_parameters_default_constructible',
                  'check_get_params_invariance', 'check_set_params', 'check_estimator_repr',
                  'check_estimators_unfitted', 'check_do_not_raise_errors_in_init_or_set_params',
                  'check_mixin_order', 'check_estimator_tags_renamed', 'check_valid_tag_types',
                  'check_non_transformer_estimators_n_iter', 'check_fit1d',
                  'check_estimator_cloneable')


@pytest.mark.parametrize('name', SKLEARN_CHECKS)
def test_scikit_learn_estimator_checks(name):
    from sklearn.utils import estimator_checks
    check = getattr(estimator_checks, name)
    check('Detector', Detector(tiny_config(), **{'optim.num_epochs': 1}))


def test_clone_and_params_follow_scikit_learn(fitted):
    from sklearn.base import clone
    det, workdir = fitted
    params = det.get_params()
    assert params == dict(config=det.config, workdir=workdir, verbose=True, **FAST)
    new = clone(det)  # the parameters, unfitted
    assert new.get_params() == params and new is not det
    with pytest.raises(NotFittedError):
        new.threshold_
    new.set_params(**{'optim.num_epochs': 3, 'verbose': False})
    assert new.get_config().optim.num_epochs == 3 and new.verbose is False
    assert det.get_params() == params  # the original is not touched


@pytest.mark.slow
def test_images_in_any_order_or_subset_score_the_same(fitted, digits):
    """scikit-learn's sample-order and subset invariance (check_methods_*_invariance),
    restated with images: each image's score does not depend on its batch."""
    det, _ = fitted
    x, _ = digits
    s = det.score_samples(x[:64])
    order = np.random.default_rng(0).permutation(64)
    np.testing.assert_allclose(det.score_samples(x[:64][order]), s[order], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.concatenate([det.score_samples(x[i:i + 16]) for i in range(0, 64, 16)]), s,
        rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_pipeline_fits_with_y_and_leaves_the_matplotlib_backend(digits, capsys):
    """fit(X, y) as a scikit-learn Pipeline calls it; verbose=False prints nothing; the
    user's matplotlib backend is the one it was (AutoAugOOD draws its plot)."""
    import matplotlib
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    x, y = digits
    before = matplotlib.get_backend()
    quiet = dict(FAST, **{'negatives.weights': 'auto', 'autoaug.embedder': 'pixels'})
    pipe = make_pipeline(FunctionTransformer(lambda a: a / 255.0),
                         Detector(tiny_config(), verbose=False, **quiet))
    pipe.fit(x[y == 3], y[y == 3])
    assert set(np.unique(pipe.predict(x[:40]))) <= {-1, 1}
    assert matplotlib.get_backend() == before
    out = capsys.readouterr()
    assert out.out == '', out.out
