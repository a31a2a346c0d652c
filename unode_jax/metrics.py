"""Detection metrics. Normal (inlier) is the positive class; higher score = more normal."""
import numpy as np
from sklearn import metrics as skm


def auroc(is_normal, score) -> float:
    is_normal = np.asarray(is_normal, bool)
    if is_normal.all() or not is_normal.any():
        raise ValueError('AUROC needs both normal and novel test images')
    return float(skm.roc_auc_score(is_normal, np.asarray(score, np.float64)))
