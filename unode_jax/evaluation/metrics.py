"""Detection metrics. Normal (inlier) is the positive class; higher score = more normal.

Names: AUPR-In finds the normal images, AUPR-Out the novel ones. OpenOOD's v1.5 release
(openood/evaluators/metrics.py, outliers positive) names them the other way round, its
AUPR-In being our AUPR-Out; its current main branch uses the names as here. FPR@95 is
the fraction of novel images accepted when 95% of normal images are.
"""
import numpy as np
from sklearn import metrics as skm

METRICS = ('auroc', 'aupr_in', 'aupr_out', 'fpr95')
NAMES = {'auroc': 'AUROC', 'aupr_in': 'AUPR-In', 'aupr_out': 'AUPR-Out', 'fpr95': 'FPR@95TPR'}


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
