"""ONNX export (`Detector.export(path, format='onnx')`, `--mode=export --format=onnx`),
checked in ONNX Runtime itself (onnxruntime.InferenceSession, none of our code): its input
is the prepared uint8 batch (N, S, S, 3), N dynamic, and its outputs score, sim and binary
are within 1e-5 of the JAX model's float64 scores on the same prepared images, for the
binary head and for the transform head with rotation copies and k neighbours.

1e-5 absolute, no relative part: scores are sums of terms of order 1 (a cosine, lambda times
a probability or a log-probability), which the graph computes in float32 (resolution 6e-8
at 1; measured differences ~2e-7); a relative bound means nothing where the two terms of
eq. (15) cancel to near 0 (the transform head's log-probability is negative).

The ONNX tests skip, with the reason, where jax2onnx or onnxruntime is not installed
(pip install 'unode-jax[onnx]'); the graph's head terms are checked against the float64
ones without them.
"""
import copy
import json
import os
import sys

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests import children
from tests.tiny_config import tiny_config
from unode_jax import Detector
from unode_jax.detector import prepare_images
from unode_jax.runtime.errors import ConfigError
from unode_jax.serving import exported, onnx_export, reference
from unode_jax.serving.export import export_model

FAST = {'negatives.transforms': ('rotation', 'cutout', 'mixup'), 'negatives.weights': 'uniform',
        'predict.holdout': 0.2}
TRANSFORM = {'head.kind': 'transform', 'score.copies': ('rotation',), 'score.knn_k': 2}
ATOL = 1e-5


@pytest.fixture(scope='module')
def ort():
    pytest.importorskip('jax2onnx', reason="the ONNX export needs jax2onnx: pip install "
                                           "'unode-jax[onnx]'")
    return pytest.importorskip('onnxruntime', reason="the ONNX export is checked in ONNX "
                                                     "Runtime: pip install 'unode-jax[onnx]'")


@pytest.fixture(scope='module')
def digits():
    d = load_digits()
    return (d.images * 15).astype(np.uint8), d.target


def fitted(root, digits, **overrides):
    x, y = digits
    return Detector(tiny_config(), str(root / 'run'), **FAST, **overrides).fit(x[y == 3])


@pytest.fixture(scope='module')
def binary(ort, digits, tmp_path_factory):
    return fitted(tmp_path_factory.mktemp('onnx_binary'), digits)


def session(ort, path):
    return ort.InferenceSession(os.path.join(path, 'model.onnx'),
                                providers=['CPUExecutionProvider'])


def assert_scores_as_jax(sess, det, x):
    prepared = prepare_images(x, det.get_config())
    got = dict(zip(('score', 'sim', 'binary'), sess.run(None, {'images': prepared})))
    want = det.score_terms(x)
    for k in ('score', 'sim', 'binary'):
        assert got[k].shape == (len(x),) and got[k].dtype == np.float32
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=ATOL, err_msg=k)


@pytest.mark.slow
def test_onnx_runtime_scores_the_binary_head_as_jax(ort, binary, digits, tmp_path, capsys):
    det, (x, _) = binary, digits
    path = det.export(str(tmp_path / 'onnx'), format='onnx')
    assert capsys.readouterr().out == ''  # jax2onnx's debugging lines are kept from the user
    assert sorted(os.listdir(path)) == ['model.json', 'model.onnx']
    sess = session(ort, path)
    (images,) = sess.get_inputs()
    assert images.name == 'images' and images.type == 'tensor(uint8)'
    assert isinstance(images.shape[0], str) and images.shape[1:] == [16, 16, 3]
    assert [(o.name, o.type) for o in sess.get_outputs()] == [
        ('score', 'tensor(float)'), ('sim', 'tensor(float)'), ('binary', 'tensor(float)')]
    for n in (1, 7, 300):  # any N
        assert_scores_as_jax(sess, det, x[:n])
    # model.json: the jax export's metadata and reference, with the graph's input and outputs.
    info = json.loads(open(os.path.join(path, 'model.json')).read())
    jax_info = json.loads(open(os.path.join(det.export(str(tmp_path / 'jax')),
                                            'model.json')).read())
    assert set(jax_info) - set(info) == {'platforms', 'jax_version'}
    assert {k: v for k, v in info.items() if k != 'onnx'} == {
        k: v for k, v in jax_info.items() if k not in ('platforms', 'jax_version')}
    assert info['threshold'] == det.threshold_ and info['onnx']['outputs'] == [
        'score', 'sim', 'binary']
    # A service's drift check, as the README shows it: the reference through ONNX Runtime.
    ref, stored = reference.decode(info['reference'], 'model.json')
    np.testing.assert_allclose(sess.run(['score'], {'images': ref})[0], stored['score'],
                               rtol=0, atol=ATOL)
    props = sess.get_modelmeta().custom_metadata_map
    assert float(props['threshold']) == det.threshold_


@pytest.mark.slow
def test_onnx_runtime_scores_the_transform_head_with_rotation_copies_as_jax(ort, digits,
                                                                           tmp_path):
    x, _ = digits
    det = fitted(tmp_path, digits, **TRANSFORM)
    path = det.export(str(tmp_path / 'onnx'), format='onnx')
    info = json.loads(open(os.path.join(path, 'model.json')).read())
    assert info['head'] == 'transform' and info['knn_k'] == 2
    assert info['copies']['transforms'] == ['rotation'] and len(info['copies']['label']) == 3
    assert_scores_as_jax(session(ort, path), det, x[:64])


@pytest.mark.slow
def test_the_command_line_writes_onnx(ort, binary, digits, tmp_path):
    det, (x, _) = binary, digits
    out = tmp_path / 'cli'
    r = children.launch(f'--workdir={det.workdir_}', '--mode=export', '--format=onnx',
                        f'--out={out}')
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'wrote {out}' in r.stdout and 'DEBUG' not in r.stdout
    assert_scores_as_jax(session(ort, str(out)), det, x[:20])
    r = children.launch(f'--workdir={det.workdir_}', '--mode=eval', '--format=onnx')
    assert r.returncode != 0 and r.stderr.strip() == 'error: --format goes with --mode=export'


def test_what_the_onnx_export_refuses(ort, binary, tmp_path):
    det = binary
    with pytest.raises(ConfigError, match='--format must be one of jax, onnx, got .tflite.'):
        det.export(str(tmp_path / 'e'), format='tflite')
    config = copy.deepcopy(det.get_config())
    config.model.dtype = 'bfloat16'
    with pytest.raises(ConfigError, match='exports a float32 network, and model.dtype=bfloat16'):
        export_model(det.model_, config, str(tmp_path / 'e'), 'onnx')
    config = copy.deepcopy(det.get_config())
    config.score.ensemble = 4
    with pytest.raises(ConfigError, match='score.ensemble=1'):
        export_model(det.model_, config, str(tmp_path / 'e'), 'onnx')
    assert not os.path.exists(tmp_path / 'e')


@pytest.mark.parametrize('head, balance, copies', [
    ('binary', 'spread', False), ('binary', 'spread', True), ('transform', 'spread', True),
    ('msp', 'appendix_c', False), ('not_negative', 'spread', False),
    ('binary', 'authors', False), ('transform', 'appendix_c', False)])
def test_the_graphs_head_terms_are_the_float64_ones(head, balance, copies):
    """onnx_export.graph_terms (float32, in the graph) against exported.terms (float64, the
    host's score.py functions) on the same similarities and logits."""
    rng = np.random.default_rng(0)
    n, classes = 50, 2 if head == 'binary' else 4
    out = dict(sim=rng.uniform(-1, 1, n), logits=rng.normal(0, 4, (n, classes)),
               copy_sim=rng.uniform(-1, 1, (3, n)), copy_logits=rng.normal(0, 4, (3, n, classes)))
    out = {k: v.astype(np.float32) for k, v in out.items()}
    info = dict(head=head, balance=balance, weight=0.7, copies=None if not copies else dict(
        weight=[0.5, 0.25, 1.0], label=[0, 1, 2] if head == 'transform' else [0, 0, 0]))
    if not copies:
        out = dict(sim=out['sim'], logits=out['logits'])
    want = exported.terms(out['sim'], out['logits'], info, out.get('copy_sim', ()),
                          out.get('copy_logits', ()))
    got = jax.jit(lambda o: onnx_export.graph_terms(o, info))(out)
    for k, g in zip(('score', 'sim', 'binary'), got):
        np.testing.assert_allclose(np.asarray(g), want[k], rtol=0, atol=2e-6, err_msg=k)


def test_without_jax2onnx_the_onnx_export_is_one_line(tmp_path, monkeypatch):
    """pip's [onnx] extra named before any work, nothing written (jax2onnx hidden from the
    import, whether it is installed or not)."""
    monkeypatch.setitem(sys.modules, 'jax2onnx', None)
    with pytest.raises(ConfigError, match=r"needs jax2onnx: pip install 'unode-jax\[onnx\]'"):
        export_model(None, tiny_config(), str(tmp_path / 'e'), 'onnx')
    assert not os.path.exists(tmp_path / 'e')


@pytest.mark.slow
def test_the_readme_onnx_runtime_snippet_runs(ort, binary, tmp_path):
    """The README's ONNX Runtime block, as written, on an ONNX export of the tiny model."""
    import re
    text = open(os.path.join(children.ROOT, 'README.md'), encoding='utf-8').read()
    code = re.search(r'```python\n(import base64, json\n.*?)```', text, re.S).group(1)
    assert 'ort.InferenceSession' in code and 'unode_jax.serving' not in code
    binary.export(str(tmp_path / 'export'), format='onnx')
    r = children.run([sys.executable, '-c', code.replace('EXPORT', str(tmp_path / 'export'))])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert re.fullmatch(r'novel: \d\.\d\d\n', r.stdout), r.stdout
