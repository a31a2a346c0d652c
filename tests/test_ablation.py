"""The learning check (untrained baseline), pixel kNN, and --mode=ablate end to end on a tiny run."""
import json

import jax
import numpy as np
import pytest

from tests.tiny_config import tiny_config
from unode_jax import ablation, validate
from unode_jax.data.registry import load_dataset
from unode_jax.data.splits import holdout_split, one_class_split
from unode_jax.evaluation import metrics, score
from unode_jax.evaluation.evaluate import embed
from unode_jax.run import run
from unode_jax.trained import restore_for_eval
from unode_jax.training import train as train_lib


def _config():
    config = tiny_config(**{'data.normal_class': -1, 'predict.holdout': 0.2,
                            'negatives.transforms': ('rotation', 'cutout', 'mixup'),
                            'autoaug.embedder': 'pixels', 'autoaug.num_images': 40,
                            'ablation.variants': ('rotation', 'none', 'con_only', 'bn_inliers',
                                                  'spread_equal')})
    return config


@pytest.mark.slow
def test_ablation_table_learning_check_and_resume(tmp_path, capsys):
    config = _config()
    table = run(config, str(tmp_path), mode='ablate', classes=(0, 1))
    rows = {r['name']: r for r in table['rows']}
    assert list(rows) == ['autoaugood', 'rotation', 'none', 'con_only', 'both', 'bn_inliers',
                          'auroc_sim', 'auroc_binary', 'auroc', 'spread_equal',
                          'balance_spread', 'balance_appendix_c', 'balance_appendix_c_norm',
                          'balance_authors', 'auroc_untrained', 'auroc_pixel_knn']
    assert table['classes'] == ['0', '1']
    out = capsys.readouterr().out
    assert 'learning check: sim (13)' in out and '| Table 5: losses |' in out

    def result(variant, c):
        return json.loads((tmp_path / variant / f'class_{c}' / 'results.json').read_text())

    for c in ('0', '1'):
        base = result('autoaugood', c)
        assert rows['autoaugood']['classes'][c] == rows['both']['classes'][c] == base['auroc']
        assert rows['auroc_sim']['classes'][c] == base['auroc_sim']
        # Variants whose head is untrained are scored by their similarity term.
        assert rows['none']['classes'][c] == result('none', c)['auroc_sim']
        assert rows['con_only']['classes'][c] == result('con_only', c)['auroc_sim']
        assert rows['rotation']['classes'][c] == result('rotation', c)['auroc']
        assert result('rotation', c)['negative_weights'] == {'rotation': 1.0, 'cutout': 0.0,
                                                             'mixup': 0.0}
        # Pixel kNN on real digits is all but perfect: a baseline the table must show.
        assert rows['auroc_pixel_knn']['classes'][c] > 0.95
        # Equal spreads: the base run's model and terms with 1 / spread_share times its
        # lambda (scored from the base's checkpoint, nothing retrained).
        equal = result('spread_equal', c)
        assert equal['steps'] == base['steps']
        assert equal['balance_weight'] == pytest.approx(
            base['balance_weight'] / config.score.spread_share, rel=1e-6)
        s = np.load(tmp_path / 'autoaugood' / f'class_{c}' / 'scores.npz')
        assert rows['spread_equal']['classes'][c] == pytest.approx(metrics.auroc(
            s['is_normal'], s['sim'] + equal['balance_weight'] * s['binary']), abs=1e-9)
    assert rows['autoaugood']['mean'] == pytest.approx(
        np.mean([rows['autoaugood']['classes'][c] for c in ('0', '1')]))
    # No hard negatives: no L_CE, NT-Xent on the inlier views only.
    none_log = [json.loads(l) for l in (tmp_path / 'none' / 'class_0' / 'metrics.jsonl').open()]
    assert all(r['loss_ce'] == 0 and r['loss'] == r['loss_con'] > 0 for r in none_log)
    con_log = [json.loads(l) for l in (tmp_path / 'con_only' / 'class_0' / 'metrics.jsonl').open()]
    assert all(r['loss'] == pytest.approx(r['loss_con']) and r['loss_ce'] > 0 for r in con_log)
    # A scoring-only variant scores the base run's final checkpoint (nothing retrained),
    # with BatchNorm statistics recomputed on the inliers and saved for predict.
    bn = tmp_path / 'bn_inliers' / 'class_0'
    assert (bn / 'metrics.jsonl').read_text() == ''  # no training step ran
    assert result('bn_inliers', '0')['steps'] == result('autoaugood', '0')['steps']
    with np.load(bn / 'bank.npz') as bank, np.load(tmp_path / 'autoaugood' / 'class_0' /
                                                   'bank.npz') as base_bank:
        assert any(k.startswith('batch_stats/') for k in bank.files)
        assert not any(k.startswith('batch_stats/') for k in base_bank.files)
        assert not np.allclose(bank['z'], base_bank['z'])
    # Predict scores with the saved statistics: a test image scores as it did in evaluation.
    from PIL import Image
    x_test = load_dataset('digits', image_size=16).x_test[:3]
    folder = tmp_path / 'new_images'
    folder.mkdir()
    for i, x in enumerate(x_test):
        Image.fromarray(x).save(folder / f'{i}.png')
    cfg = ablation.variant_config(config, {v.name: v for v in ablation.VARIANTS}['bn_inliers'])
    cfg.data.normal_class = 0
    run(cfg, str(tmp_path / 'bn_inliers'), mode='predict', images=str(folder), threshold=0.0)
    with open(bn / 'predictions.csv') as f:
        predicted = [float(line.split(',')[1]) for line in list(f)[1:]]
    np.testing.assert_allclose(predicted, np.load(bn / 'scores.npz')['score'][:3], rtol=1e-5)
    md = (tmp_path / 'ablation.md').read_text()
    assert '| Baselines | untrained network, sim (13) |' in md

    # A rerun retrains nothing and writes the same table.
    log = (tmp_path / 'rotation' / 'class_1' / 'metrics.jsonl').read_text()
    again = run(config, str(tmp_path), mode='ablate', classes=(0, 1))
    assert again == json.loads((tmp_path / 'ablation.json').read_text())
    assert (tmp_path / 'rotation' / 'class_1' / 'metrics.jsonl').read_text() == log
    assert (tmp_path / 'ablation.md').read_text() == md


@pytest.mark.slow
def test_untrained_baseline_is_the_network_before_step_0(tmp_path):
    """The learning check's number, restated: eq. (13) with the init training starts from."""
    config = _config()
    config.data.normal_class = 2
    config.negatives.weights = 'uniform'
    result = run(config, str(tmp_path), mode='train_eval')['classes']['2']
    ds = load_dataset('digits', image_size=16)
    x_train, x_test, is_normal = one_class_split(ds, 2)
    fit, _ = holdout_split(len(x_train), 0.2, config.seed)
    state = train_lib.create_train_state(jax.random.key(config.seed), config, 16)
    sim = score.max_cosine_similarity(embed(state, x_test, config)['z'],
                                      embed(state, x_train[fit], config)['z'])
    assert result['auroc_untrained'] == pytest.approx(metrics.auroc(is_normal, sim), abs=1e-9)
    pixels = score.max_cosine_similarity(x_test.reshape(len(x_test), -1).astype(np.float32),
                                         x_train[fit].reshape(len(fit), -1).astype(np.float32))
    assert result['auroc_pixel_knn'] == pytest.approx(metrics.auroc(is_normal, pixels), abs=1e-6)
    assert result['auroc_untrained'] != result['auroc_sim']  # training changed the network
    # Every balance is scored from the same embeddings; the configured one is the result.
    assert result['balances'][config.score.balance]['auroc'] == result['auroc']
    assert set(result['balances']) == set(score.BALANCES)
    # ... each equal to eq. (15) computed afresh with that balance from the trained model.
    fit, hold = holdout_split(len(x_train), 0.2, config.seed)
    trained = restore_for_eval(config, str(tmp_path), 16)
    bank, held, test = (embed(trained, x, config) for x in (x_train[fit], x_train[hold], x_test))
    for balance, got in result['balances'].items():
        w = score.score_weight(bank, balance, 'binary', held, config.score.spread_share)
        s = score.unode_scores(bank, test, balance, 'binary', w)
        assert got['weight'] == pytest.approx(w, rel=1e-6), balance
        assert got['auroc'] == pytest.approx(metrics.auroc(is_normal, s['score']), abs=1e-9)
    assert result['binary_ties'] == metrics.ties_fraction(np.load(tmp_path / 'scores.npz')['binary'])
    # --mode=report rebuilds the baseline columns from the saved scores.
    saved = np.load(tmp_path / 'scores.npz')
    assert {'sim_untrained', 'pixel_knn'} <= set(saved.files)
    summary = run(config, str(tmp_path), mode='report')
    assert summary['classes']['2']['auroc_untrained'] == pytest.approx(result['auroc_untrained'])


def test_variant_configs_override_only_their_fields():
    config = _config()
    by_name = {v.name: v for v in ablation.VARIANTS}
    cfg = ablation.variant_config(config, by_name['ce_only'])
    assert cfg.loss.con_weight == 0 and config.loss.con_weight == 1
    assert cfg.to_dict() == {**config.to_dict(), 'loss': {**config.loss.to_dict(),
                                                          'con_weight': 0.0}}
    assert ablation.variant_config(config, by_name['sobel']).negatives.weights == 'sobel=1'
    # Every variant is the base (AutoAugOOD weights) but for its own fields.
    config.negatives.weights = 'uniform'
    assert ablation.variant_config(config, by_name['ce_only']).negatives.weights == 'auto'
    assert [v.name for v in ablation.selected(config)] == ['autoaugood', 'rotation', 'none',
                                                            'con_only', 'bn_inliers',
                                                            'spread_equal']


def test_a_literal_choice_the_config_already_makes_is_not_run_twice():
    config = _config()
    config.ablation.variants = ('paper_lambda', 'paper_loss', 'con_only')
    config.loss.ce_weight, config.loss.kind = 4.0, 'authors'
    assert [v.name for v in ablation.selected(config)] == ['autoaugood', 'con_only',
                                                            'paper_loss', 'paper_lambda']
    by_name = {v.name: v for v in ablation.VARIANTS}
    assert ablation.variant_config(config, by_name['paper_lambda']).loss.ce_weight == 1.0
    config.loss.ce_weight, config.loss.kind = 1.0, 'paper'  # the paper's lambda and loss
    assert [v.name for v in ablation.selected(config)] == ['autoaugood', 'con_only']


def test_equal_spreads_row_is_the_spread_balance_whatever_the_configs_balance():
    config = _config()
    config.ablation.variants = ('spread_equal',)
    by_name = {v.name: v for v in ablation.VARIANTS}
    config.score.balance, config.score.spread_share = 'spread', 1.0  # the row is the base
    assert [v.name for v in ablation.selected(config)] == ['autoaugood']
    config.score.balance = 'appendix_c'
    assert [v.name for v in ablation.selected(config)] == ['autoaugood', 'spread_equal']
    cfg = ablation.variant_config(config, by_name['spread_equal'])
    assert (cfg.score.balance, cfg.score.spread_share) == ('spread', 1.0)


def test_the_copies_and_the_transform_head_have_their_literal_rows():
    config = _config()
    config.ablation.variants = ('none', 'binary_head', 'no_copies', 'compose_all')
    config.negatives.max_compose = 1
    names = lambda: [v.name for v in ablation.selected(config)]  # noqa: E731
    assert names() == ['autoaugood', 'none', 'compose_all']  # the paper's head, no copies
    config.head.kind, config.score.copies = 'transform', ('rotation',)
    assert names() == ['autoaugood', 'none', 'compose_all', 'binary_head', 'no_copies']
    by_name = {v.name: v for v in ablation.VARIANTS}
    for name in names():  # every row is a config the run accepts
        validate.validate_config(ablation.variant_config(config, by_name[name]))
    none = ablation.variant_config(config, by_name['none'])
    assert (none.score.copies, none.head.kind) == ((), 'binary')
    assert by_name['no_copies'].scoring_only and not by_name['binary_head'].scoring_only
