"""Export: a trained model as a folder that jax and numpy alone score, within 1e-5 of the
trained model, on batch sizes the export never saw; from the API and the command line."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests import children
from tests.tiny_config import tiny_config
from unode_jax import Detector
from unode_jax.detector import prepare_images
from unode_jax.serving import export as export_lib
from unode_jax.serving.export import export_model
from unode_jax.runtime.errors import ConfigError, DamagedFileError
from unode_jax.serving import conventions, exported, reference

FAST = {'negatives.transforms': ('rotation', 'cutout', 'mixup'), 'negatives.weights': 'uniform',
        'predict.holdout': 0.2}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    d = load_digits()
    x = (d.images * 15).astype(np.uint8)
    root = tmp_path_factory.mktemp('export')
    det = Detector(tiny_config(), str(root / 'run'), **FAST).fit(x[d.target == 3])
    return det, x, root


@pytest.mark.slow
def test_the_export_scores_as_the_trained_model(trained):
    det, x, root = trained
    path = det.export(str(root / 'exp'))
    assert sorted(os.listdir(path)) == ['arrays.npz', 'model.jax', 'model.json']
    model = exported.load(path)
    for n in (3, 300):  # 300: two calls, the second padded to 64 rows
        want, got = det.score_terms(x[:n]), model.score_terms(x[:n])
        for k in ('score', 'sim', 'binary'):
            assert got[k].dtype == np.float64 and got[k].shape == (n,)
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5)
    # The Detector's scikit-learn names, the same numbers (conventions.py).
    assert model.threshold_ == model.offset_ == det.threshold_
    np.testing.assert_array_equal(model.decision_scores_, det.decision_scores_)
    s = model.score_samples(x[:50])
    np.testing.assert_array_equal(model.is_novel(x[:50]), s < det.threshold_)
    np.testing.assert_array_equal(model.predict(x[:50]), np.where(s < det.threshold_, -1, 1))
    np.testing.assert_array_equal(model.decision_function(x[:50]), s - det.threshold_)
    middle = float(np.median(s))
    assert model.is_novel(x[:50], threshold=middle).sum() == 25
    info = json.loads((root / 'exp' / 'model.json').read_text())
    assert info['input']['image_size'] == 16 and info['input']['dtype'] == 'uint8'
    assert info['score'].startswith('higher = more normal') and len(info['config_sha256']) == 64
    assert 'cpu' in info['platforms'] and info['step'] == det.model_.step


# What jax alone loads to do the loader's work (import, and call a deserialized jax.export
# function: the call initializes the backend and its LAPACK, which imports scipy): the
# third-party modules the loader may load. Anything else is a dependency the loader adds.
JAX_ALONE = """import json, sys
import jax, numpy
f = jax.export.export(jax.jit(lambda x: x + 1))(jax.ShapeDtypeStruct((2,), numpy.float32))
jax.export.deserialize(f.serialize()).call(numpy.zeros(2, numpy.float32))
print(json.dumps(sorted(n.split('.')[0] for n in sys.modules)))
"""
# Named too, so that the test says which if one slips in (unless jax loads it itself).
NEVER = ('PIL', 'tqdm', 'flax', 'optax', 'orbax', 'tensorflow', 'tensorflow_datasets',
         'sklearn', 'matplotlib', 'ml_collections', 'absl', 'chex', 'dm_pix', 'skimage',
         'tensorboardX', 'safetensors', 'jax2onnx', 'onnx', 'onnxruntime')


def test_loading_the_export_needs_only_jax_and_numpy(trained, tmp_path):
    """A fresh interpreter imports the loader, loads an export (its reference rescored) and
    scores uint8 and [0, 1] float images: every third-party module it holds then is one
    that jax and numpy alone load; the package's own modules are jax and numpy only."""
    det, x, root = trained
    path = det.export(str(root / 'exp_alone'))
    np.save(tmp_path / 'x.npy', x[:7])
    code = ('import json, sys\n'
            'import numpy as np\n'
            'from unode_jax.serving import exported\n'
            f'm = exported.load({path!r})\n'
            f'x = np.load({str(tmp_path / "x.npy")!r})\n'
            's, f = m.score_samples(x), m.score_samples(x / 255.0)\n'
            'print(json.dumps(dict(s=s.tolist(), f=f.tolist(), '
            'modules=sorted(n.split(".")[0] for n in sys.modules))))\n')
    alone = children.run([sys.executable, '-c', JAX_ALONE])
    assert alone.returncode == 0, alone.stderr[-3000:]
    allowed = set(json.loads(alone.stdout.strip().splitlines()[-1]))
    r = children.run([sys.executable, '-c', code])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    loaded = set(out['modules'])
    assert 'jax' in allowed and 'numpy' in allowed and 'unode_jax' in loaded
    assert not (set(NEVER) - allowed) & loaded, sorted((set(NEVER) - allowed) & loaded)
    added = loaded - allowed - set(sys.stdlib_module_names) - {'unode_jax'}
    assert not added, f'the loader loads more than jax and numpy: {sorted(added)}'
    np.testing.assert_allclose(out['s'], det.score_samples(x[:7]), rtol=0, atol=1e-5)
    assert out['f'] == out['s']  # x / 255 is prepared as x


@pytest.mark.slow
def test_the_command_line_export_is_the_same_model(trained):
    det, x, root = trained
    r = children.launch(f'--workdir={root / "run"}', '--mode=export', f'--out={root / "cli"}')
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'wrote {root / "cli"}' in r.stdout
    np.testing.assert_allclose(exported.load(str(root / 'cli')).score_samples(x[:20]),
                               det.score_samples(x[:20]), rtol=0, atol=1e-5)
    r = children.launch(f'--workdir={root / "run"}', '--mode=export')
    assert r.returncode != 0 and r.stderr.strip() == 'error: --mode=export needs --out=FOLDER'
    r = children.launch(f'--workdir={root / "run"}', '--mode=eval', f'--out={root / "x"}')
    assert r.stderr.strip() == 'error: --out goes with --mode=export'


def test_bad_exports_and_targets(trained, tmp_path):
    det, x, root = trained
    with pytest.raises(FileNotFoundError, match='not an exported model: no model.jax'):
        exported.load(str(tmp_path))
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'mine.txt').write_text('keep')
    with pytest.raises(ConfigError, match='exists and is not an export'):
        det.export(str(tmp_path / 'busy'))
    assert (tmp_path / 'busy' / 'mine.txt').read_text() == 'keep'
    # Its bank was computed with one view: loading it for four is refused, naming the field.
    with pytest.raises(ConfigError, match=r'bank.npz was computed with other evaluation '
                                          r'settings: score.ensemble \(1 saved, 4 now\)'):
        Detector.load(str(root / 'run'), **{'score.ensemble': 4})
    four = Detector.load(str(root / 'run'))
    four.get_config().score.ensemble = 4  # the export itself scores one view
    with pytest.raises(ConfigError, match='score.ensemble=1'):
        four.export(str(tmp_path / 'e'))
    path = det.export(str(tmp_path / 'exp'))
    (tmp_path / 'exp' / 'arrays.npz').write_bytes(b'not a zip')
    with pytest.raises(DamagedFileError, match='arrays.npz is damaged'):
        exported.load(path)
    path = det.export(str(tmp_path / 'exp'))  # an export is replaced
    (tmp_path / 'exp' / 'model.jax').write_bytes(b'\x00' * 64)
    with pytest.raises(ValueError, match='model.jax does not read'):
        exported.load(path)
    path = det.export(str(tmp_path / 'exp'))
    info = json.loads((tmp_path / 'exp' / 'model.json').read_text())
    (tmp_path / 'exp' / 'model.json').write_text(json.dumps(dict(info, format=99)))
    with pytest.raises(ValueError, match='export format 99'):
        exported.load(path)


def test_novel_means_below_the_threshold_and_none_is_an_error():
    scores = np.array([-1.0, 0.5, 0.5, 2.0])
    np.testing.assert_array_equal(conventions.below_threshold(scores, 0.5),
                                  [True, False, False, False])
    np.testing.assert_array_equal(conventions.below_threshold(scores, '2.5'), [True] * 4)
    with pytest.raises(ValueError, match='predict.holdout=0'):
        conventions.below_threshold(scores, float('nan'))

    class Fixed(conventions.NoveltyConventions):  # the names, on given scores
        threshold_ = 0.5

        def score_terms(self, x):
            return {'score': np.asarray(x, np.float64)}
    np.testing.assert_array_equal(Fixed().predict(scores), [-1, 1, 1, 1])
    np.testing.assert_array_equal(Fixed().decision_function(scores), scores - 0.5)
    np.testing.assert_array_equal(Fixed().predict(scores, threshold=2.5), [-1] * 4)
    Fixed.threshold_ = float('nan')
    for method in ('predict', 'decision_function', 'is_novel'):
        with pytest.raises(ValueError, match='no threshold'):
            getattr(Fixed(), method)(scores)


@pytest.mark.slow
def test_the_export_orders_confident_images_as_the_host_does(trained, tmp_path):
    """Logit margins between 17 and 37: a float32 softmax rounds P(inlier) to exactly 1.0
    there, float64 does not. The export's head term keeps what the host's keeps."""
    from unode_jax.evaluation.evaluate import embed
    det, x, root = trained
    model = Detector.load(str(root / 'run')).model_
    images = prepare_images(x[:200], det.get_config())
    margin = np.diff(embed(model.state, images, det.get_config())['logits'], axis=1)[:, 0]
    params = jax.tree.map(lambda a: a, model.state.params)  # the head's bias shifted
    params['head']['bias'] = params['head']['bias'] + jnp.array([0.0, 27.0 - np.median(margin)])
    model.state = model.state.replace(params=params)
    shifted = np.asarray(embed(model.state, images, det.get_config())['logits'])
    saturated = jax.nn.softmax(jnp.asarray(shifted), axis=-1)[:, 1] == 1.0
    assert saturated.mean() > 0.5, saturated.mean()  # the premise: float32 ties most of them
    want = model.scores(images, det.get_config())
    # float64 keeps them apart (all but margins closer than its resolution near 1: 198 of 200)
    assert len(np.unique(want['binary'][saturated])) > 0.9 * saturated.sum()
    path = export_model(model, det.get_config(), str(tmp_path / 'exp'))
    got = exported.load(path).score_terms(x[:200])
    # 1 - P(inlier) = 1 / (1 + e^margin): the margins agree to float32 rounding of the network
    # (~1e-6 absolute on margins near 27), so 1 - P agrees to ~1e-6 relative; 1e-4 is slack.
    np.testing.assert_allclose(1.0 - got['binary'], 1.0 - want['binary'], rtol=1e-4, atol=0)
    np.testing.assert_allclose(got['score'], want['score'], rtol=0, atol=1e-5)


def test_a_platform_that_does_not_lower_is_left_out_with_one_line(trained, tmp_path,
                                                                  monkeypatch, capsys):
    det, x, root = trained
    real = jax.export.export

    def export(fn, platforms=None, **kwargs):
        if platforms is not None and 'tpu' in platforms:
            def fails(*args):
                raise NotImplementedError('no lowering rule for this op on tpu\nmore detail')
            return fails
        return real(fn, platforms=platforms, **kwargs)
    monkeypatch.setattr(jax.export, 'export', export)
    path = det.export(str(tmp_path / 'exp'))
    assert capsys.readouterr().out == ('export: left out platform tpu, which does not lower '
                                       'here (NotImplementedError: no lowering rule for this '
                                       'op on tpu)\n')
    info = json.loads((tmp_path / 'exp' / 'model.json').read_text())
    assert info['platforms'] == ['cpu', 'cuda']
    np.testing.assert_allclose(exported.load(path).score_samples(x[:5]), det.score_samples(x[:5]),
                               atol=1e-5)
    # This machine's own platform: the export stops, naming it.
    monkeypatch.setattr(export_lib, 'PLATFORMS', ('cpu', 'tpu'))
    monkeypatch.setattr(jax, 'default_backend', lambda: 'tpu')
    with pytest.raises(RuntimeError, match="does not lower for this machine's tpu "
                                           r'\(NotImplementedError: no lowering rule'):
        det.export(str(tmp_path / 'exp2'))


@pytest.mark.slow
def test_the_export_with_rotation_copies_and_k_neighbours_scores_as_the_model(trained, tmp_path):
    """score.copies=('rotation',) and score.knn_k > 1 travel in the export: each turn against
    the bank's turned copies, the mean of the k largest cosines, weighted as the model."""
    import copy
    import dataclasses
    from unode_jax import trained as trained_lib
    det, x, _ = trained
    config = copy.deepcopy(det.get_config())
    config.score.copies, config.score.knn_k = ('rotation',), 3
    m = det.model_
    prepared = prepare_images(x[:40], config)
    bank, weight, held = trained_lib.make_bank(m.state, config, str(tmp_path), m.x_fit,
                                               prepared[:20], None, np.array([0.5, 0.3, 0.2]))
    model = dataclasses.replace(m, bank=bank, weight=weight, holdout_scores=held)
    path = export_model(model, config, str(tmp_path / 'exp'))
    loaded = exported.load(path)
    info = json.loads(open(os.path.join(path, 'model.json')).read())
    assert info['knn_k'] == 3 and info['copies']['transforms'] == ['rotation']
    # v = K w_rotation / 3 turns, K = 3 transforms.
    np.testing.assert_allclose(info['copies']['weight'], [0.5] * 3)
    want, got = model.scores(prepared, config), loaded.score_terms(x[:40])
    for k in ('score', 'sim', 'binary'):
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5)
    config.score.copies = ('rotation', 'cutout')
    with pytest.raises(ConfigError, match='rotation copies alone'):
        export_model(model, config, str(tmp_path / 'exp2'))


def test_an_export_that_drifts_from_the_trained_model_does_not_load(trained, tmp_path):
    """Every export carries reference images and the trained model's float64 scores of them
    (model.json); load rescores them with the exported function. One weight scaled by 1% in
    arrays.npz (what a bad copy or a wrong conversion does) stops the load, naming the
    largest difference; the untouched export loads, and rtol= accepts a drift knowingly."""
    det, x, root = trained
    path = det.export(str(tmp_path / 'exp'))
    info = json.loads((tmp_path / 'exp' / 'model.json').read_text())
    assert info['format'] == 3 and list(info)[-1] == 'reference'
    images, stored = reference.decode(info['reference'], 'model.json')
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    # A fitted detector's reference: 4 blends of two fitted images each (a fitted image is
    # its own nearest neighbour in the bank, blind to drift), then 4 synthetic images.
    x_fit = det.model_.x_fit
    np.testing.assert_array_equal(images, reference.reference_images(x_fit, 16))
    assert not any((x_fit == im).all(axis=(1, 2, 3)).any() for im in images)
    np.testing.assert_array_equal(images[4:], reference.synthetic_images(16, 4))
    want = det.model_.scores(images, det.get_config())
    for k in ('score', 'sim', 'binary'):
        np.testing.assert_array_equal(stored[k], want[k])
    exported.load(path)  # untouched: it loads
    arrays = dict(np.load(tmp_path / 'exp' / 'arrays.npz'))
    key = 'variables/params/encoder/conv1/kernel'
    arrays[key] = arrays[key] * np.float32(1.01)
    np.savez(tmp_path / 'exp' / 'arrays.npz', **arrays)
    with pytest.raises(ValueError, match=r'scores its reference images unlike the trained '
                                         r'model: image \d+ scores .* \(largest difference '
                                         r'[0-9.e-]+, tolerance .*\): export it again') as e:
        exported.load(path)
    assert '\n' not in str(e.value)
    exported.load(path, rtol=0.5)  # accepted when asked for
    # A model restored from its workdir has no fitted images: a synthetic reference.
    loaded = Detector.load(str(root / 'run'))
    path = export_model(loaded.model_, loaded.get_config(), str(tmp_path / 'exp2'))
    info = json.loads((tmp_path / 'exp2' / 'model.json').read_text())
    np.testing.assert_array_equal(reference.decode(info['reference'], '')[0],
                                  reference.synthetic_images(16))
    del info['reference']
    (tmp_path / 'exp2' / 'model.json').write_text(json.dumps(info))
    with pytest.raises(ValueError, match='reference images and scores do not read'):
        exported.load(path)


def test_the_drift_tolerance():
    """ATOL + RTOL x scale, scale = the largest |sim| + |lambda binary|: of the size of the
    terms, not of a score near 0 where they cancel; nan is drift; the dtype sets RTOL."""
    stored = dict(score=np.array([0.01, -0.5]), sim=np.array([0.9, 0.5]),
                  binary=np.zeros(2))
    scale = 0.9 + 0.89  # image 0: |sim| + |score - sim| (image 1: 0.5 + 1.0)
    tol = reference.ATOL + reference.RTOL['float32'] * scale
    reference.check(stored, stored['score'] + [0.99 * tol, -0.99 * tol], 'float32', 'x')
    with pytest.raises(ValueError, match=r'image 1 scores .* tolerance 0.00018 = 0.0001 x '
                                         r'scale 1.79 '):
        reference.check(stored, stored['score'] + [0, 1.01 * tol], 'float32', 'x')
    with pytest.raises(ValueError, match='image 0 scores nan'):
        reference.check(stored, [np.nan, -0.5], 'float32', 'x')
    reference.check(stored, stored['score'] + 1e-2, 'bfloat16', 'x')
    reference.check(stored, stored['score'] + 1e-2, 'float32', 'x', rtol=1e-2)
