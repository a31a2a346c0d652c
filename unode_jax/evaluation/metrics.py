"""Detection metrics. Normal (inlier) is the positive class; higher score = more normal.

Names: AUPR-In finds the normal images, AUPR-Out the novel ones. OpenOOD's v1.5 release
(openood/evaluators/metrics.py, outliers positive) names them the other way round, its
AUPR-In being our AUPR-Out; its current main branch uses the names as here. FPR@95 is
the fraction of novel images accepted when 95% of normal images are.

The operating point (operating_point) turns the other way: there the NOVEL images are the
positive class, as a user of the fitted threshold t sees them. An image is flagged novel
when its score < t (predict.csv's is_novel, serving's below_threshold; a score equal to t
is normal). TPR@t is the share of novel test images flagged, FPR@t the share of normal
test images flagged, precision@t the share of flagged images that are novel, F1@t their
harmonic mean with TPR@t. F1-max is the best F1 of that flag over every threshold.
"""
import numpy as np
from sklearn import metrics as skm

METRICS = ('auroc', 'aupr_in', 'aupr_out', 'fpr95')
# The operating point's rates (fractions, novel = positive), then the thresholds they use.
OPERATING = ('tpr_at_threshold', 'fpr_at_threshold', 'precision_at_threshold',
             'f1_at_threshold', 'f1_max')
THRESHOLDS = ('threshold', 'f1_max_threshold')
NAMES = {'auroc': 'AUROC', 'aupr_in': 'AUPR-In', 'aupr_out': 'AUPR-Out', 'fpr95': 'FPR@95TPR',
         'tpr_at_threshold': 'TPR@t', 'fpr_at_threshold': 'FPR@t',
         'precision_at_threshold': 'precision@t', 'f1_at_threshold': 'F1@t',
         'f1_max': 'F1-max', 'threshold': 't', 'f1_max_threshold': 't of F1-max'}


def _check(is_normal, score):
    is_normal = np.asarray(is_normal, bool)
    score = np.asarray(score, np.float64)
    if is_normal.shape != score.shape or is_normal.ndim != 1:
        raise ValueError(f'need 1-D labels and scores of one length, got {is_normal.shape} '
                         f'and {score.shape}')
    if is_normal.all() or not is_normal.any():
        raise ValueError('detection metrics need both normal and novel test images')
    if not np.isfinite(score).all():
        raise ValueError(f'{int((~np.isfinite(score)).sum())} scores are not finite')
    return is_normal, score


def auroc(is_normal, score) -> float:
    is_normal, score = _check(is_normal, score)
    return float(skm.roc_auc_score(is_normal, score))


def aupr_in(is_normal, score) -> float:
    """Average precision of finding the normal images by high score."""
    is_normal, score = _check(is_normal, score)
    return float(skm.average_precision_score(is_normal, score))


def aupr_out(is_normal, score) -> float:
    """Average precision of finding the novel images by low score."""
    is_normal, score = _check(is_normal, score)
    return float(skm.average_precision_score(~is_normal, -score))


def fpr_at_tpr(is_normal, score, tpr=0.95) -> float:
    """Fraction of novel images scoring at or above the highest threshold that keeps at
    least `tpr` of the normal images (the first ROC point with TPR >= tpr)."""
    is_normal, score = _check(is_normal, score)
    # Every threshold: by default roc_curve drops collinear points, and where tied groups
    # hold equal numbers of normal and novel images the first point past tpr can go.
    fpr_curve, tpr_curve, _ = skm.roc_curve(is_normal, score, drop_intermediate=False)
    return float(fpr_curve[np.argmax(tpr_curve >= tpr - 1e-12)])


def detection_metrics(is_normal, score) -> dict:
    """AUROC, AUPR-In, AUPR-Out and FPR@95TPR, normal = positive."""
    return dict(auroc=auroc(is_normal, score), aupr_in=aupr_in(is_normal, score),
                aupr_out=aupr_out(is_normal, score), fpr95=fpr_at_tpr(is_normal, score))


def ties_fraction(values):
    """The fraction of values equal to at least one other (ties an AUROC cannot order)."""
    values = np.asarray(values).ravel()
    if not len(values):
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    return float(counts[counts > 1].sum() / len(values))


def at_threshold(is_normal, score, threshold) -> dict:
    """TPR, FPR, precision and F1 of the novel flag `score < threshold` (novel = positive;
    tpr_at_threshold, ...). No image flagged: precision 0 (nothing found; scikit-learn's
    zero_division=0), and F1 0. A NaN threshold (none fitted): all four NaN."""
    is_normal, score = _check(is_normal, score)
    threshold = float(threshold)
    if np.isnan(threshold):
        return dict.fromkeys(OPERATING[:4], float('nan'))
    flagged = score < threshold
    n_novel, n_normal = int((~is_normal).sum()), int(is_normal.sum())
    tp, fp = int((flagged & ~is_normal).sum()), int((flagged & is_normal).sum())
    return dict(tpr_at_threshold=tp / n_novel, fpr_at_threshold=fp / n_normal,
                precision_at_threshold=tp / (tp + fp) if tp + fp else 0.0,
                f1_at_threshold=_f1(tp, fp, n_novel))


def _f1(tp, fp, n_novel):
    """2 TP / (2 TP + FP + FN), FN = n_novel - TP: the harmonic mean of precision and
    recall, 0 when TP = 0 (the denominator is at least n_novel > 0)."""
    return 2 * tp / (tp + fp + n_novel)


def f1_max(is_normal, score):
    """(F1-max, its threshold): the best F1 of the novel flag `score < t` over every t
    (novel = positive). Images of equal score are flagged together, so the candidates are
    the flags of the k lowest distinct scores, k = 1 .. all; the threshold returned is the
    lowest score left unflagged (the next distinct score; past the highest score when all
    are flagged), so `score < t` reproduces the flag. Of equal F1s, the fewest flagged."""
    is_normal, score = _check(is_normal, score)
    values, group = np.unique(score, return_inverse=True)  # ascending
    tp = np.cumsum(np.bincount(group, weights=~is_normal, minlength=len(values)))
    fp = np.cumsum(np.bincount(group, weights=is_normal, minlength=len(values)))
    f1 = _f1(tp, fp, int((~is_normal).sum()))
    k = int(np.argmax(f1))  # The first of equal maxima (equal counts' ratios are equal).
    t = values[k + 1] if k + 1 < len(values) else np.nextafter(values[-1], np.inf)
    return float(f1[k]), float(t)


def operating_point(is_normal, score, threshold=float('nan')) -> dict:
    """A result row's operating point: the threshold t (None without one), TPR, FPR,
    precision and F1 at it (at_threshold; None without t: JSON's null, shown as '-'), and
    F1-max with its threshold (threshold-free, always there)."""
    threshold = float(threshold)
    at = {k: None if np.isnan(v) else v
          for k, v in at_threshold(is_normal, score, threshold).items()}
    best, best_t = f1_max(is_normal, score)
    return dict(threshold=None if np.isnan(threshold) else threshold, **at, f1_max=best,
                f1_max_threshold=best_t)
