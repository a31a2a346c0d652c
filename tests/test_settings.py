"""End-to-end runs of the multi-class settings (Table 3) and of predict on a folder of images."""
import csv
import dataclasses
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tests import children
from tests.tiny_config import tiny_config
from unode_jax import run as run_lib
from unode_jax.data.registry import load_dataset
from unode_jax.evaluation import predict as predict_lib, report, score
from unode_jax.evaluation.evaluate import embed
from unode_jax.run import run
from unode_jax.runtime.errors import ConfigError
from unode_jax.trained import restore_for_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {'negatives.transforms': ('rotation', 'cutout', 'mixup'), 'negatives.weights': 'uniform'}


@pytest.fixture(scope='module')
def digits16():
    return load_dataset('digits', image_size=16)


@pytest.mark.slow
def test_unlabeled_and_labeled_multiclass(tmp_path, digits16, monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (30, 8, 8), np.uint8)  # gray, 8 px
    np.savez(tmp_path / 'noise.npz', x=noise)
    folder = tmp_path / 'folder'
    folder.mkdir()
    others = digits16.x_test[digits16.y_test >= 7][:12]
    for i, x in enumerate(others):
        Image.fromarray(x).save(folder / f'{i}.png')
    (folder / 'broken.png').write_bytes(b'not an image')  # skipped, counted
    config = tiny_config(**FAST, **{
        'data.setting': 'unlabeled', 'data.inlier_classes': (0, 1, 2),
        'data.outlier_sets': ('rest', f'noise={tmp_path / "noise.npz"}', str(folder))})
    summary = run(config, str(tmp_path / 'unlabeled'))
    n_in = int(np.isin(digits16.y_test, (0, 1, 2)).sum())
    rows = summary['outlier_sets']
    assert list(rows) == ['rest', 'noise', 'folder']
    assert [rows[k]['n_test_outliers'] for k in rows] == [len(digits16.y_test) - n_in, 30, 12]
    assert all(r['n_test_inliers'] == n_in for r in rows.values())
    # Digits 0-2 against noise, digits 3-9 and digits 7-9 (1.0, 0.93 and 0.97 measured);
    # chance is 0.5, a flipped score near 0.
    assert rows['noise']['auroc'] > 0.99 and rows['rest']['auroc'] > 0.8, rows
    assert rows['folder']['auroc'] > 0.8, rows
    assert summary['mean_auroc'] == pytest.approx(np.mean([r['auroc'] for r in rows.values()]))
    out = tmp_path / 'unlabeled'
    bank = predict_lib.load_bank(str(out))
    assert bank['head'] == 'binary' and bank['logits'].shape == (
        int(np.isin(digits16.y_train, (0, 1, 2)).sum()), 2)
    assert (out / 'ood_noise' / 'roc.png').exists() and '| noise |' in (
        out / 'results.md').read_text()
    first = {n: (out / n).read_text() for n in ('results.csv', 'results.md')}
    report.rebuild(str(out))
    assert {n: (out / n).read_text() for n in first} == first
    # Eval mode restores the model and gives the same numbers.
    again = run(config, str(out), mode='eval')
    assert again['outlier_sets']['rest']['auroc'] == rows['rest']['auroc']
    # The unlabeled setting does not use the labels: shuffled among the inliers' training
    # images (the same images in the same order), the run is the same.
    y = digits16.y_train.copy()
    inliers = np.flatnonzero(np.isin(y, (0, 1, 2)))
    y[inliers] = y[np.random.default_rng(1).permutation(inliers)]
    shuffled = dataclasses.replace(digits16, y_train=y)
    assert (shuffled.y_train != digits16.y_train).sum() > 100
    with monkeypatch.context() as m:
        m.setattr(run_lib, 'load_data', lambda config, workdir=None: shuffled)
        permuted = run(config, str(tmp_path / 'permuted'))
    assert {k: r['auroc'] for k, r in permuted['outlier_sets'].items()} == {
        k: r['auroc'] for k, r in rows.items()}

    # Labeled: a (K+1)-way head, its term the max softmax over the K inlier classes.
    config.data.setting = 'labeled'
    config.data.outlier_sets = ('rest',)
    labeled = run(config, str(tmp_path / 'labeled'))
    bank = predict_lib.load_bank(str(tmp_path / 'labeled'))
    assert bank['head'] == 'msp' and bank['logits'].shape[1] == 4
    assert labeled['head_term'] == 'msp' and labeled['setting'] == 'labeled'
    # The head learned the inlier labels: on the inliers' test images it beats chance (1/3;
    # 0.58 measured, 0.31 when trained on shuffled labels), and their scores' term is its MSP.
    x_test = digits16.x_test[np.isin(digits16.y_test, (0, 1, 2))]
    y_test = digits16.y_test[np.isin(digits16.y_test, (0, 1, 2))]
    state = predict_lib.with_batch_stats(
        restore_for_eval(config, str(tmp_path / 'labeled'), 16, num_classes=4), bank)
    logits = embed(state, x_test, config)['logits']
    assert np.mean(logits[:, :3].argmax(1) == y_test) > 0.45
    scores = report.load_scores(str(tmp_path / 'labeled' / 'ood_rest'))
    np.testing.assert_allclose(scores['binary'][:len(x_test)], score.head_term(logits, 'msp'),
                               rtol=1e-5)
    again = run(config, str(tmp_path / 'labeled'), mode='eval')
    assert again['outlier_sets']['rest']['auroc'] == labeled['outlier_sets']['rest']['auroc']
    with pytest.raises(ConfigError, match='one_class'):
        run(config, str(tmp_path / 'labeled'), mode='corrupted')


def _write_folder(folder, x_test):
    """Test digits as PNG/JPEG files of mixed sizes and channel counts, and bad files."""
    folder.mkdir()
    (folder / 'sub').mkdir()
    Image.fromarray(x_test[0]).save(folder / 'a_rgb16.png')  # as in training: 16 px RGB
    Image.fromarray(x_test[1][..., 0]).resize((40, 40)).save(folder / 'b_gray40.png')
    Image.fromarray(x_test[2]).convert('RGBA').save(folder / 'sub' / 'c_rgba.PNG')
    Image.fromarray(x_test[3]).resize((24, 30)).save(folder / 'd_rgb.jpg', quality=95)
    (folder / 'e_empty.png').write_bytes(b'')
    good = (folder / 'a_rgb16.png').read_bytes()
    (folder / 'f_truncated.png').write_bytes(good[:len(good) // 2])
    (folder / 'notes.txt').write_text('not listed')


@pytest.mark.slow
def test_predict_scores_a_mixed_folder(tmp_path, digits16):
    workdir = tmp_path / 'run'
    config = tiny_config(**FAST, **{'data.normal_class': 0, 'predict.holdout': 0.25})
    run(config, str(workdir))
    folder = tmp_path / 'new'
    _write_folder(folder, digits16.x_test)
    path, counts = run(config, str(workdir), mode='predict', images=str(folder))
    assert counts['error'] == 2 and counts['novel'] + counts['normal'] == 4
    with open(path) as f:
        rows = {os.path.basename(r['path']): r for r in csv.DictReader(f)}
    assert sorted(rows) == ['a_rgb16.png', 'b_gray40.png', 'c_rgba.PNG', 'd_rgb.jpg',
                            'e_empty.png', 'f_truncated.png']
    assert 'empty file' in rows['e_empty.png']['error'] and rows['e_empty.png']['score'] == ''
    assert 'truncated' in rows['f_truncated.png']['error']
    # The threshold is the stated quantile of the held-out normal training images' scores.
    bank = predict_lib.load_bank(str(workdir))
    n_train = int((digits16.y_train == 0).sum())
    assert len(bank['holdout_scores']) == round(0.25 * n_train)
    assert len(bank['z']) == n_train - len(bank['holdout_scores'])
    assert bank['threshold'] == pytest.approx(np.quantile(bank['holdout_scores'], 0.05))
    for r in rows.values():
        if r['score']:
            assert int(r['is_novel']) == (float(r['score']) < bank['threshold'])
    # A 16 px RGB file scores exactly as the same test image did in evaluation.
    test_scores = report.load_scores(str(workdir))
    assert float(rows['a_rgb16.png']['score']) == pytest.approx(test_scores['score'][0], abs=1e-5)
    # --threshold overrides; a run without held-out images needs it.
    _, counts = run(config, str(workdir), mode='predict', images=str(folder / '*.png'),
                    threshold=-1e9)
    assert counts == dict(novel=0, normal=2, error=2)
    config.predict.holdout = 0.0
    run(config, str(tmp_path / 'all'), mode='train_eval')
    with pytest.raises(ConfigError, match='--threshold'):
        run(config, str(tmp_path / 'all'), mode='predict', images=str(folder))
    # The command line: one summary line, and a one-line error for an empty glob.
    cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/default.py',
           f'--workdir={workdir}', '--mode=predict',
           '--config.data.name=digits', '--config.data.image_size=16', '--config.model.name=tiny',
           '--config.batch_size=8', '--config.optim.num_epochs=2', '--config.predict.holdout=0.25',
           '--config.optim.warmup_epochs=1',  # tiny_config's: every training field as trained
           '--config.negatives.weights=uniform', '--config.progress_bar=False',
           "--config.negatives.transforms=('rotation','cutout','mixup')"]
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
    r = children.run(cmd + [f'--images={folder}'], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '6 files: ' in r.stdout and '2 unreadable' in r.stdout
    r = children.run(cmd + [f'--images={tmp_path}/none/*.png'], env=env)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith('error:')
