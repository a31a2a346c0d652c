"""A trained workdir carries its config: eval and predict without --config, eval-time
overrides allowed, training fields refused (configs/saved.py, launch.py)."""
import pytest
import json
import shutil

import numpy as np
from PIL import Image

from unode_jax.configs import saved
from tests import children
from tests.tiny_config import tiny_config
from unode_jax.runtime import fingerprint
from unode_jax.runtime.errors import ConfigError
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
    # bank.npz is now eval's (ensemble 2): predict with the saved config's ensemble 1 would
    # compare one-view embeddings with a two-view bank and lambda. One line, nothing scored.
    r = launch(f'--workdir={work}', '--mode=predict', f'--images={images}', '--threshold=0.5')
    assert r.returncode == 1 and r.stderr == (
        f'error: {work / "bank.npz"} was computed with other evaluation settings: '
        'score.ensemble (2 saved, 1 now): rerun --mode=eval with these settings to write it '
        'again, or score with the saved ones\n'), r.stderr
    assert not (work / 'predictions.csv').exists()
    r = launch(f'--workdir={work}', '--mode=predict', f'--images={images}', '--threshold=0.5',
               '--config.score.ensemble=2')
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


def test_fields_training_reads_and_fields_it_does_not():
    """Every field but the listed evaluation and run fields is a training field; a new
    field is guarded until it is listed."""
    from unode_jax.configs import default
    fields = fingerprint.flat_fields(default.get_config())
    not_trained = {k for k in fields if not fingerprint.is_training_field(k)}
    assert {k for k in not_trained if not k.startswith(('score.', 'corruptions.', 'report.',
                                                        'ablation.'))} == {
        'predict.quantile', 'progress_bar', 'tensorboard', 'deterministic', 'log_every',
        'checkpoint_every', 'keep_checkpoints', 'data.data_dir', 'data.cache_dir',
        'data.cache', 'data.download', 'data.path', 'data.strict', 'data.device_budget_mb',
        'autoaug.download', 'autoaug.cache_dir', 'autoaug.batch_size'}
    for name in ('predict.holdout', 'loss.ce_weight', 'optim.num_epochs', 'seed',
                 'data.name', 'data.normal_class', 'data.image_size', 'batch_size',
                 'autoaug.clip_weights', 'data.cache_something_new', 'scorer.x'):
        assert fingerprint.is_training_field(name), name
    # The differences named are those of training fields, both values, in name order.
    saved = dict(fields, **{'loss.ce_weight': 2.0, 'score.spread_share': 1.0})
    with pytest.raises(ConfigError) as e:
        fingerprint.check_fields(saved, dict(fields, **{'optim.num_epochs': 3}), '/w')
    assert str(e.value).startswith(
        "/w holds a model trained with other settings: loss.ce_weight (2.0 saved, 1.0 now), "
        "optim.num_epochs (1000 saved, 3 now) (the learning-rate schedule spans "
        "optim.num_epochs, so a longer or shorter run is a new run): train in a new "
        "workdir, or score the saved model with --mode=eval without --config")
    # A field the saved record lacks (added since) or the config lacks (removed): not compared.
    fingerprint.check_fields({'loss.old_field': 1}, dict(fields, **{'loss.new_field': 2}), '/w')


@pytest.mark.slow
def test_a_rerun_with_another_training_field_stops_before_any_work(trained_digits3, tmp_path):
    """The issue's two commands: the second names loss.ce_weight with both values, in one
    line, and touches nothing (the saved model, config.json, results)."""
    work = tmp_path / 'w'
    shutil.copytree(trained_digits3, work)
    (tmp_path / 'new').mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'new' / '0.png')
    before = _tree(work)
    config = f'--config=configs/saved.py:{work}'
    for flags, named in [(('--config.loss.ce_weight=2',), 'loss.ce_weight (1.0 saved, 2.0 now)'),
                         (('--config.optim.num_epochs=4',), 'optim.num_epochs (2 saved, 4 now)'),
                         (('--config.optim.num_epochs=1', '--mode=train'),
                          'optim.num_epochs (2 saved, 1 now)'),
                         (('--config.predict.holdout=0.2', '--mode=eval'),
                          'predict.holdout (0.0 saved, 0.2 now)'),
                         (('--config.seed=1', '--mode=predict', f'--images={tmp_path / "new"}'),
                          'seed (0 saved, 1 now)'),
                         (('--config.seed=1', '--mode=export', f'--out={tmp_path / "e"}'),
                          'seed (0 saved, 1 now)')]:
        r = launch(config, f'--workdir={work}', *flags)
        assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr[-3000:]
        assert r.stderr.startswith(f'error: {work} holds a model trained with other settings: '
                                   f'{named}'), r.stderr
        assert 'train in a new workdir' in r.stderr and '--mode=eval without --config' in r.stderr
        assert _tree(work) == before
    # Without --config (the saved config), a training field is refused as before.
    r = launch(f'--workdir={work}', '--mode=eval', '--config.predict.holdout=0.2')
    assert r.returncode == 1 and r.stderr.startswith('error: --config.predict.holdout: ')
    assert 'trained with its own value' in r.stderr and _tree(work) == before


def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*'))
            if p.is_file()}


@pytest.mark.slow
def test_a_sweep_rerun_re_evaluates_when_only_evaluation_fields_change(tmp_path, capsys):
    from unode_jax.run import run
    from unode_jax.training import train as train_lib
    config = tiny_config(**{'negatives.transforms': ('rotation', 'cutout', 'mixup'),
                            'negatives.weights': 'uniform', 'data.normal_class': -1,
                            'predict.holdout': 0.2})
    first = run(config, str(tmp_path), classes=(0, 1))
    logs = {c: (tmp_path / f'class_{c}' / 'metrics.jsonl').read_text() for c in '01'}
    capsys.readouterr()
    config.score.spread_share = 1.0  # an evaluation field: the models stay, the scores change
    again = run(config, str(tmp_path), classes=(0, 1))
    out = capsys.readouterr().out
    for c in '01':
        assert f'class {c} ({c}): {tmp_path / f"class_{c}" / "results.json"} was computed ' \
               'with other settings or images; evaluating again' in out
        assert again['classes'][c]['spread_share'] == 1.0
        assert first['classes'][c]['spread_share'] == 0.1
        assert again['classes'][c]['steps'] == first['classes'][c]['steps']
        assert (tmp_path / f'class_{c}' / 'metrics.jsonl').read_text() == logs[c]  # no step
        assert again['classes'][c]['auroc_binary'] == first['classes'][c]['auroc_binary']
        saved = json.loads((tmp_path / f'class_{c}' / 'results.json').read_text())
        assert saved['spread_share'] == 1.0
    # The same settings again: each class's results.json is read back, nothing recomputed.
    calls = []
    real = train_lib.train
    train_lib.train = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        third = run(config, str(tmp_path), classes=(0, 1))
    finally:
        train_lib.train = real
    assert calls == [] and third['classes'] == again['classes']
    # A training field: the sweep stops before any class, naming it (and decay_epochs, a
    # formula of it in configs/default.py).
    config.optim.num_epochs = 3
    with pytest.raises(ConfigError, match=r'holds a model trained with other settings: '
                                          r'optim.decay_epochs \(1 saved, 2 now\), '
                                          r'optim.num_epochs \(2 saved, 3 now\) \(the '):
        run(config, str(tmp_path), classes=(0, 1))


@pytest.mark.slow
def test_other_images_behind_the_same_config_are_refused(tmp_path):
    """data.path is not a training field (a moved dataset trains the same model), but the
    images it holds are: another file's images stop the rerun, and the evaluation."""
    from unode_jax.run import run
    def arrays(path, seed):
        g = np.random.default_rng(seed)
        np.savez(path, x_train=g.integers(0, 256, (40, 16, 16, 3), np.uint8),
                 y_train=np.repeat([0, 1], 20), x_test=g.integers(0, 256, (20, 16, 16, 3),
                                                                 np.uint8),
                 y_test=np.repeat([0, 1], 10))
    arrays(tmp_path / 'a.npz', 0)
    arrays(tmp_path / 'b.npz', 1)
    work = str(tmp_path / 'w')
    config = tiny_config(**{'data.name': 'arrays', 'data.path': str(tmp_path / 'a.npz'),
                            'negatives.transforms': ('rotation',), 'negatives.weights': 'uniform',
                            'score.baselines': ()})
    run(config, work, mode='train')
    shutil.copy(tmp_path / 'a.npz', tmp_path / 'moved.npz')
    config.data.path = str(tmp_path / 'moved.npz')  # the same images elsewhere: resumed
    run(config, work, mode='train')
    config.data.path = str(tmp_path / 'b.npz')
    for mode in ('train', 'eval'):
        with pytest.raises(ConfigError, match=f'{work} holds a model trained on other images '
                                              r'\(20 images, sha256 [0-9a-f]{12}\.\.\. saved; '
                                              r'20 images, sha256 [0-9a-f]{12}\.\.\. now\)'):
            run(config, work, mode=mode)
