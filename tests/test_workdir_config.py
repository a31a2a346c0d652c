"""A trained workdir carries its config: eval and predict without --config, eval-time
overrides allowed, training fields refused (configs/saved.py, launch.py)."""
import pytest
import json
import shutil

import numpy as np
from PIL import Image

from configs import saved
from tests import children
from tests.tiny_config import tiny_config
from unode_jax.trained import save_config

launch = children.launch


def test_saved_config_reads_back_the_training_config(trained_digits3, tmp_path):
    config = saved.get_config(str(trained_digits3))
    with open(trained_digits3 / 'config.json') as f:
        assert json.loads(config.to_json_best_effort()) == json.load(f)
    assert config.negatives.transforms == ('rotation', 'cutout', 'mixup')  # tuples again
    assert config.data.normal_class == 3 and config.model.name == 'tiny'
    # A sweep's class folders get their own (normal_class = the class) ...
    sweep = tmp_path / 'sweep'
    base = tiny_config(**{'data.normal_class': -1, 'optim.peak_lr': 0.5})
    save_config(base, str(sweep))
    save_config(base, str(sweep / 'class_4'), normal_class=4)
    got = saved.get_config(str(sweep / 'class_4'))
    assert got.data.normal_class == 4 and got.optim.peak_lr == 0.5
    assert base.data.normal_class == -1  # the sweep's config is not changed
    # ... and one written before they had it falls back to the sweep's, with its class.
    (sweep / 'class_7').mkdir()
    assert saved.get_config(str(sweep / 'class_7')).data.normal_class == 7
    assert saved.saved_config_path(str(tmp_path / 'nothing')) == (None, None)


@pytest.mark.slow
def test_eval_and_predict_without_config(trained_digits3, tmp_path):
    work = tmp_path / 'w'
    shutil.copytree(trained_digits3, work)
    before = json.loads((work / 'results.json').read_text())
    r = launch(f'--workdir={work}', '--mode=eval', '--config.score.ensemble=2')
    assert r.returncode == 0, r.stderr[-3000:]
    after = json.loads((work / 'results.json').read_text())
    assert after['classes']['3']['ensemble'] == 2 and before['classes']['3']['ensemble'] == 1
    assert after['classes']['3']['steps'] == before['classes']['3']['steps']
    # The training config stays as it was trained.
    assert json.loads((work / 'config.json').read_text())['score']['ensemble'] == 1

    images = tmp_path / 'new'
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(images / f'{i}.png')
    r = launch(f'--workdir={work}', '--mode=predict', f'--images={images}', '--threshold=0.5')
    assert r.returncode == 0, r.stderr[-3000:]
    assert '3 files:' in r.stdout and (work / 'predictions.csv').exists()

    # A training field: one line naming it, nothing run.
    r = launch(f'--workdir={work}', '--mode=eval', '--config.optim.peak_lr=2')
    assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith('error: --config.optim.peak_lr: ') and 'score' in r.stderr
    # Not a trained workdir: --config is still needed, said in one line.
    r = launch(f'--workdir={tmp_path / "empty"}', '--mode=eval')
    assert r.returncode == 1 and r.stderr.count('\n') == 1
    assert '--config is required' in r.stderr and not (tmp_path / 'empty').exists()
