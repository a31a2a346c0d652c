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


# The operating point: NOVEL images are the positive class, an image is flagged novel when
# its score < t (a score equal to t is normal).

def direct_count(is_normal, score, t):
    """TPR, FPR, precision and F1 of the flag score < t, counted image by image."""
    tp = fp = fn = tn = 0
    for normal, s in zip(is_normal, score):
        if s < t and normal:
            fp += 1
        elif s < t:
            tp += 1
        elif normal:
            tn += 1
        else:
            fn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0  # metrics.py's choice: nothing flagged
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(tpr_at_threshold=recall, fpr_at_threshold=fp / (fp + tn),
                precision_at_threshold=precision, f1_at_threshold=f1)


def f1_max_by_sklearn(is_normal, score):
    """The best F1 over every threshold, from precision_recall_curve (novel = positive:
    labels ~is_normal, ranked by -score)."""
    from sklearn.metrics import precision_recall_curve
    p, r, _ = precision_recall_curve(~is_normal, -score)
    with np.errstate(invalid='ignore', divide='ignore'):
        return float(np.nanmax(np.where(p + r > 0, 2 * p * r / (p + r), 0.0)))


def test_operating_point_hand_computed():
    # Normal 3, 5, 6, 7, 8 and novel 1, 2, 4, 6, 9 (6 is tied across the classes).
    is_normal = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    score = np.r_[[3, 5, 6, 7, 8], [1, 2, 4, 6, 9]].astype(np.float64)
    # t = 4.5 flags 3 (normal) and 1, 2, 4 (novel): TP 3, FP 1, FN 2.
    at = metrics.at_threshold(is_normal, score, 4.5)
    assert at == pytest.approx(dict(tpr_at_threshold=3 / 5, fpr_at_threshold=1 / 5,
                                    precision_at_threshold=3 / 4, f1_at_threshold=6 / 9))
    # t = 6: the tied 6s are not flagged (strict <): 3, 5 and 1, 2, 4.
    assert metrics.at_threshold(is_normal, score, 6.0) == pytest.approx(dict(
        tpr_at_threshold=3 / 5, fpr_at_threshold=2 / 5, precision_at_threshold=3 / 5,
        f1_at_threshold=6 / 10))
    # Nothing flagged: precision 0 by definition, F1 0; everything flagged.
    assert metrics.at_threshold(is_normal, score, 1.0) == dict(
        tpr_at_threshold=0.0, fpr_at_threshold=0.0, precision_at_threshold=0.0,
        f1_at_threshold=0.0)
    assert metrics.at_threshold(is_normal, score, 100.0) == pytest.approx(dict(
        tpr_at_threshold=1.0, fpr_at_threshold=1.0, precision_at_threshold=0.5,
        f1_at_threshold=2 / 3))
    # F1 = 2 TP / (TP + FP + 5) flagging the k lowest distinct scores: 1: 2/6, 2: 4/7,
    # 3: 4/8, 4: 6/9, 5: 6/10, 6 (both): 8/12, 7: 8/13, 8: 8/14, 9: 10/15. Three reach 2/3;
    # the fewest flagged is 1, 2, 3, 4, so t = 5, the lowest score left unflagged.
    assert metrics.f1_max(is_normal, score) == (pytest.approx(2 / 3), 5.0)
    assert metrics.at_threshold(is_normal, score, 5.0)['f1_at_threshold'] == pytest.approx(2 / 3)
    # Novel images above every normal one: flagging all is best, t just past the highest.
    best, t = metrics.f1_max(np.r_[True, True, False, False], np.r_[1.0, 2.0, 3.0, 4.0])
    assert best == pytest.approx(2 / 3) and 4.0 < t < 4.0 + 1e-12


def test_operating_point_without_a_threshold():
    is_normal = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    score = np.r_[np.arange(5) + 10.0, np.arange(5.0)]
    at = metrics.at_threshold(is_normal, score, float('nan'))
    assert list(at) == list(metrics.OPERATING[:4]) and all(np.isnan(v) for v in at.values())
    row = metrics.operating_point(is_normal, score)  # JSON's null, shown as '-'
    assert row == dict(threshold=None, tpr_at_threshold=None, fpr_at_threshold=None,
                       precision_at_threshold=None, f1_at_threshold=None, f1_max=1.0,
                       f1_max_threshold=10.0)
    assert set(row) == set(metrics.OPERATING + metrics.THRESHOLDS)
    with pytest.raises(ValueError, match='both normal and novel'):
        metrics.operating_point(np.ones(3, bool), np.arange(3.0), 1.0)


@pytest.mark.parametrize('seed', range(30))
def test_operating_point_against_a_direct_count_and_sklearn(seed):
    from sklearn.metrics import f1_score, precision_score, recall_score
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 80))
    is_normal = rng.random(n) < rng.uniform(0.2, 0.9)
    is_normal[:2] = True, False
    levels = int(rng.integers(2, 12)) if seed % 2 else 10 ** 6  # ties, or (nearly) none
    score = rng.integers(0, levels, n) / levels + 0.3 * is_normal
    for t in np.r_[rng.choice(score, 3), rng.uniform(-0.5, 1.5, 3), score.min(), np.inf]:
        at = metrics.at_threshold(is_normal, score, t)
        assert at == pytest.approx(direct_count(is_normal, score, t), abs=1e-12)
        flag = score < t
        assert at['precision_at_threshold'] == pytest.approx(
            precision_score(~is_normal, flag, zero_division=0.0), abs=1e-12)
        assert at['tpr_at_threshold'] == pytest.approx(recall_score(~is_normal, flag))
        assert at['f1_at_threshold'] == pytest.approx(f1_score(~is_normal, flag, zero_division=0.0))
        assert at['f1_at_threshold'] <= metrics.f1_max(is_normal, score)[0] + 1e-12
    best, t = metrics.f1_max(is_normal, score)
    assert best == pytest.approx(f1_max_by_sklearn(is_normal, score), abs=1e-12)
    # The threshold returned reaches it, and no lower one does (the fewest flagged).
    assert f1_score(~is_normal, score < t) == pytest.approx(best, abs=1e-12)
    assert all(direct_count(is_normal, score, u)['f1_at_threshold'] < best - 1e-12
               for u in np.unique(score) if u < t)
    row = metrics.operating_point(is_normal, score, t)
    assert row['threshold'] == t and row['f1_at_threshold'] == pytest.approx(best)
