"""UNODE novelty scores, eq. (13)-(15): kNN cosine similarity + balanced binary head.

Higher score = more normal. The similarity term is the largest cosine between a
test embedding and the training feature bank (eq. 13; the search: knn.py), with the
test-time copies (copies.py) averaged in when the bank has them.
"""
import numpy as np

from unode_jax.evaluation.knn import leave_one_out_max_cosine, max_cosine_similarity

# lambda of eq. (15) (score_weight): appendix_c matches the two terms' means on training
# data (the paper), on eq. (13)'s cosine scale; appendix_c_norm is appendix C's two steps
# literally (the binary score divided by its training mean, times the mean norm of the
# training embeddings) with the similarity on the norm scale they imply, <z, z_m/|z_m|>
# = |z| cos(z, z_m) (the authors' similarity), and P(inlier) as the binary term; spread
# matches the terms' standard deviations on normal images the model did not train on
# (held-out training images; the training images when none are held out); authors
# restates the authors' code.
BALANCES = ('spread', 'appendix_c', 'appendix_c_norm', 'authors')
# The balances whose similarity term is <z, z_m/|z_m|> (scaled by |z|), not the cosine.
NORM_SCALED = ('appendix_c_norm', 'authors')
# The head's term of the score. binary: eq. (14), P(inlier) of the 2-way head. With the
# (K+1)-way head of the labeled setting (class K = hard negatives): msp, the largest
# softmax probability over the K inlier classes (appendix B.3), or not_negative,
# 1 - P(class K) (the other option in the authors' research code).
# transform: the log-probability of the identity class (the last) of the transform head
# (head.kind='transform': one class per hard transform, then the identity), whose
# test-time copies (copies.py) add the log-probability of the transform that made them.
HEAD_TERMS = ('binary', 'msp', 'not_negative', 'transform')
LABELED_TERMS = ('msp', 'not_negative')


def bank_leave_one_out(bank, k=1):
    """leave_one_out_max_cosine of bank['z'], computed once per bank and k (kept in bank):
    the balances of eq. (15) compared in one evaluation all read it."""
    key = 'loo_max_cosine' if k == 1 else f'loo_max_cosine_k{k}'
    if key not in bank:
        bank[key] = leave_one_out_max_cosine(bank['z'], k=k)
    return bank[key]


def softmax64(logits):
    """Softmax over the last axis in float64. In float32 P(inlier) rounds to exactly 1.0
    once the logit margin passes ~17, and the most normal images tie; in float64 only
    past ~37 (metrics.ties_fraction measures what is left)."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def inlier_probability(logits):
    """Eq. (14): P(y = 1 | x), class 1 = inlier; float64 (see softmax64)."""
    return softmax64(logits)[:, 1]


def head_term(logits, kind='binary'):
    """The head's normality term (one of HEAD_TERMS) from (N, C) logits; higher = more normal.
    float64, so that saturated probabilities do not tie (softmax64)."""
    logits = np.asarray(logits, np.float64)
    if kind == 'binary':
        if logits.shape[1] != 2:
            raise ValueError(f"the 'binary' term needs a 2-way head, got {logits.shape[1]}")
        return inlier_probability(logits)
    if kind not in HEAD_TERMS:
        raise ValueError(f'head term must be one of {HEAD_TERMS}, got {kind!r}')
    if logits.shape[1] < 2:
        raise ValueError(f'{kind!r} needs a (K+1)-way head, got {logits.shape[1]} outputs')
    if kind == 'transform':
        return log_softmax64(logits)[:, -1]
    p = softmax64(logits)
    return p[:, :-1].max(axis=1) if kind == 'msp' else 1.0 - p[:, -1]


def log_softmax64(logits):
    """log softmax over the last axis in float64."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def copy_term(logits, label, kind='binary'):
    """The head's term of a test-time copy (copies.py): the probability (binary head) or
    log-probability (transform head) of its right class `label`."""
    if kind == 'binary':
        return softmax64(logits)[:, label]
    if kind == 'transform':
        return log_softmax64(logits)[:, label]
    raise ValueError(f"test-time copies need the 'binary' or 'transform' head term, got {kind!r}")


def copy_mean(first, rest, weights):
    """(first + sum_c v_c rest[c]) / (1 + sum_c v_c): the image's term and its copies',
    v = weights (copies.copy_weights)."""
    v = np.asarray(weights, np.float64)
    return (first + sum(w * np.asarray(r, np.float64) for w, r in zip(v, rest))) / (1.0 + v.sum())



def similarity(bank, test):
    """Eq. (13) of each test row: its largest cosine to the bank's z (the mean of the
    bank['knn_k'] largest), and with test-time copies the weighted mean over the image and
    its copies, each against the bank's copies under the same transform."""
    k = bank.get('knn_k', 1)
    sim = max_cosine_similarity(test['z'], bank['z'], k=k)
    if not bank.get('copies'):
        return sim
    rest = [max_cosine_similarity(tz, bz, k=k)
            for tz, bz in zip(test['copies']['z'], bank['copies']['z'])]
    return copy_mean(sim, rest, bank['copies']['weight'])


def similarity_leave_one_out(bank):
    """similarity() of the bank's own rows, each row's self-match left out."""
    k = bank.get('knn_k', 1)
    sim = bank_leave_one_out(bank, k)
    if not bank.get('copies'):
        return sim
    rest = [leave_one_out_max_cosine(bz, k=k) for bz in bank['copies']['z']]
    return copy_mean(sim, rest, bank['copies']['weight'])


def head_terms(bank, test, head='binary'):
    """The head's term of eq. (15) for each test row (head_term), with test-time copies
    the weighted mean over the image and its copies (copy_term)."""
    term = head_term(test['logits'], head)
    if not bank.get('copies'):
        return term
    rest = [copy_term(l, label, head)
            for l, label in zip(test['copies']['logits'], bank['copies']['label'])]
    return copy_mean(term, rest, bank['copies']['weight'])


def balance_weight(train_sim, train_prob, floor=1e-3):
    """Appendix C's lambda: scale the binary term to the similarity term on training data.

    The binary score is divided by its training mean (so it is 1 on average on
    normal data) and multiplied by the scale of the similarity score on training
    data, so each term contributes equally. Eq. (13)'s similarity is a cosine; its
    training scale is the mean leave-one-out max cosine of the training embeddings.
    Both means are clamped to `floor`: a probability mean is >= 0 and the cosine
    scale of any useful model is positive, so lambda can neither change sign nor
    exceed 1 / floor.
    """
    return float(max(np.mean(train_sim), floor) / max(np.mean(train_prob), floor))


def spread_weight(sim, term, share=1.0, floor=1e-6, cap=1e6):
    """lambda = share * std(sim) / std(term) on normal images: the head's term of eq. (15)
    then varies `share` times as much as the similarity on normal data, so neither
    dominates the sum by its scale alone (appendix C's mean matching leaves the binary
    probability, whose spread is far larger than a cosine's, in charge); share = 1 matches
    the spreads. Positive and at most `cap`."""
    return float(min(share * max(np.std(sim), floor) / max(np.std(term), floor), cap))


def score_weight(train, balance='appendix_c', head='binary', reference=None, share=1.0):
    """lambda of eq. (15) from the training bank {'z', 'logits'}: appendix C's balance
    (see balance_weight), spread matching (spread_weight, the head's term given `share`
    of the similarity's spread) on `reference` ({'z', 'logits'} of held-out normal images;
    None: the bank, its similarity leave-one-out), or the authors' 1 / mean(logit_0)."""
    if balance not in BALANCES:
        raise ValueError(f'score.balance must be one of {BALANCES}, got {balance!r}')
    if balance == 'spread':
        if reference is not None and len(reference['z']) >= 2:
            return spread_weight(similarity(train, reference),
                                 head_terms(train, reference, head), share)
        return spread_weight(similarity_leave_one_out(train),
                             head_terms(train, train, head), share)
    if balance == 'appendix_c':
        return balance_weight(similarity_leave_one_out(train), head_terms(train, train, head))
    _check_plain(train, balance)
    if balance == 'appendix_c_norm':
        return balance_weight(np.linalg.norm(np.asarray(train['z'], np.float64), axis=1),
                              head_term(train['logits'], head))
    if head != 'binary':
        raise ValueError("score.balance='authors' is defined for the binary head only")
    return float(1.0 / np.mean(np.asarray(train['logits'])[:, 0]))


def unode_scores(train, test, balance='appendix_c', head='binary', weight=None):
    """Eq. (15) for every test image, from {'z', 'logits'} of the train bank and test set
    (with score.copies, their 'copies' too; the bank's 'knn_k' and copy weights say how
    eq. 13 and 14 are taken: similarity, head_terms).

    Returns dict(score, sim, binary, weight); `binary` is the head's term (`head`, one of
    HEAD_TERMS: eq. (14) by default, appendix B.3's MSP in the labeled setting). weight:
    lambda from score_weight(train, balance, head), computed when not given.
    balance='authors' restates the authors' code: score = <z, z_m/|z_m|>/mean|z_train| +
    logit_0 / mean(logit_0 on train), raw projections and the *negative* class's logit,
    which flips the sign of the binary term when its training mean is positive; kept for
    comparison only.
    """
    if weight is None:
        weight = score_weight(train, balance, head)
    if balance not in NORM_SCALED:
        sim = similarity(train, test)
        binary = head_terms(train, test, head)
        return dict(score=sim + weight * binary, sim=sim, binary=binary, weight=weight)
    _check_plain(train, balance)
    sim = max_cosine_similarity(test['z'], train['z'])
    if balance == 'appendix_c_norm':  # <z, z_m/|z_m|>: the cosine on the norm scale.
        sim = sim * np.linalg.norm(np.asarray(test['z'], np.float64), axis=1)
    if balance == 'authors':  # The authors' scaled raw similarity.
        sim = sim * np.linalg.norm(test['z'], axis=1) / np.mean(np.linalg.norm(train['z'], axis=1))
    binary = balanced_head_term(test['logits'], head, balance)
    return dict(score=sim + weight * binary, sim=sim, binary=binary, weight=weight)


def is_plain(bank):
    """Whether the bank is scored with one view and the nearest neighbour (no score.copies,
    score.knn_k = 1), which the norm-scaled balances need."""
    return not bank.get('copies') and bank.get('knn_k', 1) == 1


def _check_plain(bank, balance):
    if not is_plain(bank):
        raise ValueError(f'score.balance={balance!r} scores one view with the nearest '
                         'neighbour: it takes no score.copies and score.knn_k = 1')


def balanced_head_term(logits, head, balance):
    """The head's term that eq. (15) adds under `balance`: head_term (float64), or with the
    authors' balance their raw negative-class logit. The export's scorer shares it."""
    if balance == 'authors':
        return np.asarray(logits)[:, 0]
    return head_term(logits, head)
