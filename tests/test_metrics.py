"""Detection metrics against numpy restatements and hand-computed cases (normal = positive)."""
import numpy as np
import pytest

from unode_jax.evaluation import metrics


def average_precision(pos, score):
    """sum_k (R_k - R_{k-1}) P_k over the thresholds at each distinct score, high to low."""
    order = np.argsort(-score, kind='stable')
    pos, score = pos[order], score[order]
    ap, last_recall = 0.0, 0.0
    for t in np.unique(score)[::-1]:
        hit = score >= t
        recall, precision = pos[hit].sum() / pos.sum(), pos[hit].mean()
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def fpr_at_95(is_normal, score):
    """Brute force: the highest threshold keeping >= 95% of normals, then the outliers above."""
    for t in np.sort(np.unique(score))[::-1]:
        if np.mean(score[is_normal] >= t) >= 0.95:
            return np.mean(score[~is_normal] >= t)


def test_hand_computed_case():
    normal = np.arange(20.0)  # 0..19: keeping 95% (19 of 20) means threshold 1
    novel = np.array([18.5, 17.5, 0.5, -1, -2, -3, -4, -5, -6, -7])  # 2 of 10 at or above 1
    is_normal = np.r_[np.ones(20, bool), np.zeros(10, bool)]
    score = np.r_[normal, novel]
    assert metrics.fpr_at_tpr(is_normal, score) == pytest.approx(0.2)
    # AUROC: the share of (normal, novel) pairs in which the normal image scores higher.
    pairs = (normal[:, None] > novel[None, :]).mean()
    assert metrics.auroc(is_normal, score) == pytest.approx(pairs)
    perfect = np.r_[np.ones(5), np.zeros(5)].astype(bool), np.r_[np.arange(5) + 10, np.arange(5)]
    m = metrics.detection_metrics(*perfect)
    assert m == dict(auroc=1.0, aupr_in=1.0, aupr_out=1.0, fpr95=0.0)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_against_numpy_restatements(seed):
    rng = np.random.default_rng(seed)
    is_normal = rng.random(300) < 0.3
    score = np.round(rng.normal(size=300) + 1.2 * is_normal, 1)  # ties included
    m = metrics.detection_metrics(is_normal, score)
    assert m['aupr_in'] == pytest.approx(average_precision(is_normal, score), abs=1e-12)
    assert m['aupr_out'] == pytest.approx(average_precision(~is_normal, -score), abs=1e-12)
    assert m['fpr95'] == pytest.approx(fpr_at_95(is_normal, score), abs=1e-12)
    pairs = (score[is_normal][:, None] > score[~is_normal][None, :]).mean() + 0.5 * (
        score[is_normal][:, None] == score[~is_normal][None, :]).mean()
    assert m['auroc'] == pytest.approx(pairs, abs=1e-12)
    # Outliers-as-positive (OpenOOD's convention) swaps the two AUPRs.
    flipped = metrics.detection_metrics(~is_normal, -score)
    assert flipped['aupr_in'] == pytest.approx(m['aupr_out'])
    assert flipped['auroc'] == pytest.approx(m['auroc'])


def test_fpr95_where_roc_curve_drops_the_point():
    """Normal scores 0..19 and two novel images at 0 and 1: threshold 1 keeps 19 of 20
    normal images and accepts 1 of 2 novel ones (roc_curve's default drops that point)."""
    is_normal = np.r_[np.ones(20, bool), np.zeros(2, bool)]
    score = np.r_[np.arange(20.0), 0.0, 1.0]
    assert metrics.fpr_at_tpr(is_normal, score) == 0.5
    assert fpr_at_95(is_normal, score) == 0.5


@pytest.mark.parametrize('seed', range(40))
def test_fpr95_against_a_direct_count_on_tie_patterns(seed):
    """Scores from a few levels, so ties mix normal and novel images in every pattern."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 60))
    is_normal = rng.random(n) < rng.uniform(0.2, 0.9)
    is_normal[:2] = True, False
    score = rng.integers(0, int(rng.integers(2, 12)), n).astype(np.float64)
    for tpr in (0.95, 0.8, 0.5):
        direct = next(np.mean(score[~is_normal] >= t) for t in np.unique(score)[::-1]
                      if np.mean(score[is_normal] >= t) >= tpr)
        assert metrics.fpr_at_tpr(is_normal, score, tpr) == direct


def test_bad_inputs():
    with pytest.raises(ValueError, match='both normal and novel'):
        metrics.auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match='not finite'):
        metrics.aupr_in([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match='one length'):
        metrics.fpr_at_tpr([1, 0, 1], [0.1, 0.2])
