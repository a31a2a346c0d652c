"""scikit-learn's and PyOD's method names for a novelty detector on images, shared by the
Python API (unode_jax.Detector) and an exported model (serving/exported.py); numpy only.

The direction is scikit-learn's (its novelty detectors: OneClassSVM, LocalOutlierFactor
with novelty=True, IsolationForest): higher = more normal.

  score_samples(X)     eq. (15) of each image, float64 (N,)
  decision_scores_     eq. (15) of the normal training images held out of training
                       (predict.holdout); empty when nothing was held out
  threshold_           the predict.quantile quantile of decision_scores_ (nan when
                       predict.holdout = 0); offset_ is the same number, under
                       scikit-learn's name
  decision_function(X) score_samples(X) - threshold_: 0 at the threshold, negative = novel
  predict(X)           +1 normal, -1 novel (a score below threshold_), int64 (N,)
  is_novel(X)          predict(X) == -1, as booleans

PyOD's detectors count the other way (higher = more abnormal, predict 1 = outlier):
PyOD's decision_function(X) is -score_samples(X) here, its threshold_ is -threshold_, its
decision_scores_ is -decision_scores_, and its predict(X) is (predict(X) == -1) as 0/1.
"""
import numpy as np

NORMAL, NOVEL = 1, -1


def below_threshold(scores, threshold):
    """Which scores are below threshold (novel); a nan threshold is a ValueError."""
    threshold = float(threshold)
    if np.isnan(threshold):
        raise ValueError('no threshold: the model was trained with predict.holdout=0 '
                         '(nothing held out to fit one); pass threshold=S')
    return np.asarray(scores) < threshold


class NoveltyConventions:
    """The names above, for a class that gives score_terms(X) -> {'score': eq. (15), ...},
    threshold_ and decision_scores_."""

    def score_samples(self, X):
        """eq. (15) of each image, float64 (N,); higher = more normal."""
        return self.score_terms(X)['score']

    @property
    def offset_(self):
        """scikit-learn's name of the threshold: decision_function = score_samples - offset_."""
        return self.threshold_

    def decision_function(self, X, threshold=None):
        """score_samples(X) - threshold (default threshold_): negative = novel."""
        t = self.threshold_ if threshold is None else float(threshold)
        scores = self.score_samples(X)
        below_threshold(scores[:0], t)  # A nan threshold: the one-line ValueError.
        return scores - t

    def predict(self, X, threshold=None):
        """+1 for a normal image, -1 for a novel one (scored below the threshold)."""
        novel = self.is_novel(X, threshold)
        return np.where(novel, NOVEL, NORMAL).astype(np.int64)

    def is_novel(self, X, threshold=None):
        """Whether each image scores below the threshold (default threshold_)."""
        return below_threshold(self.score_samples(X),
                               self.threshold_ if threshold is None else threshold)
