"""benchmarks/validation.py: the textures' spatial split, the spread shares re-weighted from
saved terms, the seed ensemble, and --eval_of scoring a trained variant without training."""
import importlib.util
import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location(
        'validation_bench', os.path.join(ROOT, 'benchmarks/validation.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_textures_split_shares_no_pixel():
    from unode_jax.data import textures
    bench = _bench()
    xt, yt, xv, yv = bench.texture_split()
    # 29 grid rows; (104 - 32) / 8 + 1 = 10 training and (56 - 32) / 8 + 1 = 4 validation
    # columns a texture.
    assert xt.shape == (4 * 290, 32, 32) and xv.shape == (4 * 116, 32, 32)
    assert np.bincount(yt).tolist() == [290] * 4 and np.bincount(yv).tolist() == [116] * 4
    image = textures.read_texture(textures.skimage_data_dir() / textures.TEXTURES['grass'])
    np.testing.assert_array_equal(xt[:290], textures.cut(image, 0, bench.TEXTURE_SPLIT))
    # The last training patch ends where the first validation patch starts: no pixel in both.
    last_train_end = 32 + 8 * ((bench.TEXTURE_SPLIT - 32) // 8)
    assert last_train_end <= bench.TEXTURE_SPLIT <= textures.TRAIN_COLUMNS - 32
    np.testing.assert_array_equal(xv[:116], textures.cut(image, bench.TEXTURE_SPLIT,
                                                         textures.TRAIN_COLUMNS))


def test_shares_and_the_seed_ensemble_from_saved_scores(tmp_path):
    bench = _bench()
    rng = np.random.default_rng(0)
    normal = np.arange(60) < 20
    runs = []
    for i in range(2):
        sim, binary = rng.normal(size=60) + normal, rng.normal(size=60) + 0.5 * normal
        path = tmp_path / f'scores{i}.npz'
        np.savez(path, score=sim + 0.4 * binary, sim=sim, binary=binary, is_normal=normal)
        runs.append(dict(scores=str(path), weight=0.4, share=0.1))
    got = bench.shared_aurocs(runs[0], [0.1, 1.0])
    with np.load(runs[0]['scores']) as f:
        # lambda is linear in the share: share 1 is ten times the run's lambda at 0.1.
        assert got['share_1'] == pytest.approx(100 * roc_auc_score(
            normal, f['sim'] + 4.0 * f['binary']))
        assert got['share_0.1'] == pytest.approx(100 * roc_auc_score(normal, f['score']))
    scores = [np.load(r['scores'])['score'] for r in runs]
    assert bench.seed_ensemble_auroc(runs) == pytest.approx(
        100 * roc_auc_score(normal, (scores[0] + scores[1]) / 2))


@pytest.mark.slow
def test_eval_of_scores_the_trained_models_with_other_evaluation_settings(tmp_path):
    bench = _bench()
    tiny = ['--config.model.name=tiny', '--config.optim.num_epochs=1',
            '--config.autoaug.num_images=20', '--config.score.copies=()']
    common = ['--dataset=digits', '--classes=1', '--seeds=0', f'--workdir={tmp_path}']
    bench.main(common + ['--name=base', '--shares=0.3,1', '--', *tiny])
    base = json.loads((tmp_path / 'base.json').read_text())
    assert set(base['mean']) >= {'eq15', 'sim', 'binary', 'share_0.3', 'share_1'}
    assert base['mean']['share_0.3'][0] == pytest.approx(base['mean']['eq15'][0])
    copies = bench.main(common + ['--name=rot', '--eval_of=base', '--',
                                  *tiny[:-1], "--config.score.copies=('rotation',)"])
    run = tmp_path / 'rot' / 'class_1_seed_0'
    assert os.path.islink(run / 'checkpoints')  # scored, not trained
    result = json.loads((run / 'results.json').read_text())['classes']['1']
    assert result['copies'] == ['rotation'] and np.isnan(copies['untrained'][0])
    with pytest.raises(SystemExit, match='holds no finished run'):
        bench.main(common + ['--name=rot2', '--eval_of=nothing', '--', *tiny])
