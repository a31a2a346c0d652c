"""UNODE novelty scores, eq. (13)-(15): kNN cosine similarity + balanced binary head.

Higher score = more normal. The similarity term is the largest cosine between a
test embedding and the training feature bank (eq. 13), computed by jitted,
chunked matmuls so memory stays bounded by the chunk sizes.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.losses import l2_normalize

BALANCES = ('appendix_c', 'authors')


@functools.partial(jax.jit, static_argnames=('bank_chunk',))
def _max_cos_chunk(queries, bank, bank_valid, bank_chunk):
    """Max over the (padded) bank of <q, b> for one chunk of normalised queries."""
    n_chunks = bank.shape[0] // bank_chunk
    bank = bank.reshape(n_chunks, bank_chunk, -1)
    valid = bank_valid.reshape(n_chunks, bank_chunk)

    def body(best, chunk):
        b, v = chunk
        sim = jnp.where(v[None, :], queries @ b.T, -jnp.inf)
        return jnp.maximum(best, sim.max(axis=1)), None

    init = jnp.full((queries.shape[0],), -jnp.inf, queries.dtype)
    best, _ = jax.lax.scan(body, init, (bank, valid))
    return best


def _pad_rows(x, multiple):
    pad = (-x.shape[0]) % multiple
    return np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x


def max_cosine_similarity(queries, bank, *, query_chunk=1024, bank_chunk=8192) -> np.ndarray:
    """Each query's largest cosine similarity to the rows of bank (rows need not be normalised).

    queries: (M, D), bank: (N, D). Returns float32 (M,). Work is tiled over queries
    and bank, with chunks padded to fixed sizes so one compilation serves every call.
    """
    queries = np.asarray(queries, np.float32)
    bank = np.asarray(bank, np.float32)
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f'need queries (M, D) and bank (N, D); got {queries.shape} and {bank.shape}')
    if bank.shape[0] == 0:
        raise ValueError('the feature bank is empty')
    bank_chunk = min(bank_chunk, bank.shape[0])
    query_chunk = min(query_chunk, max(queries.shape[0], 1))
    valid = _pad_rows(np.ones(bank.shape[0], bool), bank_chunk)
    bank_n = l2_normalize(jnp.asarray(_pad_rows(bank, bank_chunk)))
    out = []
    for start in range(0, queries.shape[0], query_chunk):
        q = queries[start:start + query_chunk]
        qn = l2_normalize(jnp.asarray(_pad_rows(q, query_chunk)))
        out.append(np.asarray(_max_cos_chunk(qn, bank_n, jnp.asarray(valid), bank_chunk))[:len(q)])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def inlier_probability(logits):
    """Eq. (14): P(y = 1 | x), class 1 = inlier."""
    return np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)[:, 1])


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


def leave_one_out_max_cosine(z, chunk=1024) -> np.ndarray:
    """For each row of z, the largest cosine to any *other* row (the self-match excluded)."""
    z = np.asarray(z, np.float32)
    zn = np.asarray(l2_normalize(jnp.asarray(z)))
    out = np.empty(len(z), np.float32)
    for s in range(0, len(z), chunk):
        sim = zn[s:s + chunk] @ zn.T
        sim[np.arange(sim.shape[0]), s + np.arange(sim.shape[0])] = -np.inf
        out[s:s + chunk] = sim.max(axis=1) if len(z) > 1 else 1.0
    return out


def unode_scores(train, test, balance='appendix_c'):
    """Eq. (15) for every test image, from {'z', 'logits'} of the train bank and test set.

    Returns dict(score, sim, binary, weight). balance='authors' restates the authors'
    code: score = <z, z_m/|z_m|>/mean|z_train| + logit_0 / mean(logit_0 on train),
    raw projections and the *negative* class's logit, which flips the sign of the
    binary term when its training mean is positive; kept for comparison only.
    """
    if balance not in BALANCES:
        raise ValueError(f'score.balance must be one of {BALANCES}, got {balance!r}')
    if balance == 'appendix_c':
        sim = max_cosine_similarity(test['z'], train['z'])
        binary = inlier_probability(test['logits'])
        weight = balance_weight(leave_one_out_max_cosine(train['z']),
                                inlier_probability(train['logits']))
        return dict(score=sim + weight * binary, sim=sim, binary=binary, weight=weight)
    norms = np.linalg.norm(test['z'], axis=1)
    sim = max_cosine_similarity(test['z'], train['z']) * norms / \
                                np.mean(np.linalg.norm(train['z'], axis=1))
    binary = np.asarray(test['logits'])[:, 0]
    weight = float(1.0 / np.mean(np.asarray(train['logits'])[:, 0]))
    return dict(score=sim + weight * binary, sim=sim, binary=binary, weight=weight)
