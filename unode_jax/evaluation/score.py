"""UNODE novelty scores, eq. (13)-(15): kNN cosine similarity + balanced binary head.

Higher score = more normal. The similarity term is the largest cosine between a
test embedding and the training feature bank (eq. 13), computed by jitted,
chunked matmuls, with the bank sharded over the local devices, so memory stays
bounded by the bank plus the chunk sizes.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.runtime import hosts
from unode_jax.training.losses import l2_normalize

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


def _pad_rows(x, multiple):
    pad = (-x.shape[0]) % multiple
    return np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x


def _pow2_at_least(n, floor=128):
    return max(floor, 1 << (max(n, 1) - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _mesh(devices):
    return jax.sharding.Mesh(np.array(devices, dtype=object), ('bank',))


@functools.partial(jax.jit, donate_argnums=0)  # the raw upload is dead afterwards
def _normalize(x):
    return l2_normalize(x)


@functools.lru_cache(maxsize=None)
def _block_max_fn(mesh, masked, k=1):
    """Jitted best <- the k largest of (best, one bank block's <q, b>) for a fixed mesh.

    A block holds bank_chunk rows per device; each device takes one (query_chunk,
    bank_chunk) tile and keeps its own running k largest (best is (devices, query_chunk,
    k), one row per device), reduced on the host at the end: no collectives, which on
    CPU can deadlock when many multi-device programs are queued. The tile shape does
    not depend on the number of devices, so 1 and k devices compute the same
    products and give bit-identical maxima. masked (static): n_valid (traced, so it
    never recompiles) masks the padding rows of the last block, and bank row b_start + j
    is masked for query q_start + i where the two are one image (leave-one-out; q_start
    < -N for none). Unmasked, for the full blocks of a plain search, the tile is one dot
    and its row maxima (the mask cost up to half the tile's time on a CPU:
    benchmarks/knn.py); the products are the same either way. k = 1 keeps a running max;
    k > 1 a running lax.top_k over the k kept and the tile's own k largest.
    """
    P = jax.sharding.PartitionSpec

    def tile(q, b, n_valid, best, q_start, b_start):
        # HIGHEST: on GPUs the default f32 matmul may round through TF32/bf16.
        sim = jnp.matmul(q, b.T, precision=jax.lax.Precision.HIGHEST)
        if masked:
            row = jax.lax.axis_index('bank') * b.shape[0] + jnp.arange(b.shape[0])
            same = (b_start + row)[None, :] == (q_start + jnp.arange(q.shape[0]))[:, None]
            sim = jnp.where((row < n_valid)[None, :] & ~same, sim, -jnp.inf)
        if k == 1:
            return jnp.maximum(best, sim.max(axis=1)[None, :, None])
        kept = jnp.concatenate([best[0], jax.lax.top_k(sim, k)[0]], axis=1)
        return jax.lax.top_k(kept, k)[0][None]

    return jax.jit(jax.shard_map(tile, mesh=mesh,
                                 in_specs=(P(), P('bank'), P(), P('bank'), P(), P()),
                                 out_specs=P('bank')), donate_argnums=3)


def _check_chunks(query_chunk, bank_chunk):
    if query_chunk < 1 or bank_chunk < 1:
        raise ValueError(f'chunk sizes must be >= 1; got {query_chunk} and {bank_chunk}')


# The tile of max_cosine_similarity: query and bank rows per device. The fastest on a 2-core
# CPU (benchmarks/knn.py, 10,000 queries against 50,000 rows: at D = 128 0.70 s against
# 0.86 s with 512 x 4096 tiles and faiss's 0.69 s; at D = 2048 8.5 s against 14.7 s and
# faiss's 7.0 s); accelerators may prefer larger ones.
DEFAULT_CHUNKS = dict(query_chunk=2048, bank_chunk=1024)


def max_cosine_similarity(queries, bank, *, k=1, query_chunk=DEFAULT_CHUNKS['query_chunk'],
                          bank_chunk=DEFAULT_CHUNKS['bank_chunk'], devices=None) -> np.ndarray:
    """Each query's largest cosine similarity to the rows of bank (rows need not be normalised);
    k > 1: the mean of its k largest (k is capped at the bank's rows; score.knn_k).

    queries: (M, D), bank: (N, D). Returns float32 (M,). The bank is normalised once
    and kept on `devices` (default: jax.local_devices()), split into blocks of
    bank_chunk rows per device; each query chunk visits every block, and the
    per-device maxima are reduced on the host. Memory is bounded by the bank plus one
    (query_chunk, bank_chunk) tile per device: no (M, N) matrix is formed. Chunks are padded to
    fixed sizes (for inputs smaller than a chunk, the power of two >= max(size, 128)),
    so a given D compiles once however M and N vary (twice: the full blocks of a plain
    search skip the padding mask). DEFAULT_CHUNKS says how the default tile was chosen.
    In a multi-host run each process scores its share of the queries against the whole
    bank on its own devices, and all get every query's score.
    """
    queries = np.asarray(queries, np.float32)
    bank = np.asarray(bank, np.float32)
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f'need queries (M, D) and bank (N, D); got {queries.shape} and {bank.shape}')
    if bank.shape[0] == 0:
        raise ValueError('the feature bank is empty')
    _check_chunks(query_chunk, bank_chunk)
    k = _check_k(k, bank.shape[0])
    if queries.shape[0] == 0:
        return np.zeros((0,), np.float32)
    return hosts.split_rows(
        lambda q, first: _local_max_cosine(q, bank, query_chunk, bank_chunk, devices, k=k),
        queries, align=query_chunk)


def leave_one_out_max_cosine(z, *, k=1, query_chunk=DEFAULT_CHUNKS['query_chunk'],
                             bank_chunk=DEFAULT_CHUNKS['bank_chunk'], devices=None):
    """For each row of z, the largest cosine to any *other* row (the self-match excluded;
    k > 1: the mean of the k largest, k capped at the other rows):
    max_cosine_similarity's tiled kernel on the devices with each row's own column masked
    (a single row: 1.0). A multi-host run splits the rows as max_cosine_similarity does."""
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f'need a non-empty (N, D) bank; got {z.shape}')
    _check_chunks(query_chunk, bank_chunk)
    if len(z) == 1:
        return np.ones(1, np.float32)
    k = _check_k(k, len(z) - 1)
    return hosts.split_rows(
        lambda q, first: _local_max_cosine(q, z, query_chunk, bank_chunk, devices, first, k),
        z, align=query_chunk)


def bank_leave_one_out(bank, k=1):
    """leave_one_out_max_cosine of bank['z'], computed once per bank and k (kept in bank):
    the balances of eq. (15) compared in one evaluation all read it."""
    key = 'loo_max_cosine' if k == 1 else f'loo_max_cosine_k{k}'
    if key not in bank:
        bank[key] = leave_one_out_max_cosine(bank['z'], k=k)
    return bank[key]


def _check_k(k, n_rows):
    if int(k) != k or k < 1:
        raise ValueError(f'k must be a positive integer, got {k!r}')
    return min(int(k), n_rows)


def _local_max_cosine(queries, bank, query_chunk, bank_chunk, devices, self_start=None, k=1):
    """max_cosine_similarity on this process's devices; self_start: the bank row of the
    first query when the queries are the bank's own rows (leave-one-out), else None; k:
    the mean of the k largest (k <= the rows that count)."""
    mesh = _mesh(tuple(jax.local_devices() if devices is None else devices))
    n_dev = mesh.devices.size
    # Small inputs need no full-size chunk; powers of two keep the compile count small.
    bank_chunk = min(bank_chunk, _pow2_at_least(bank.shape[0]))
    query_chunk = min(query_chunk, _pow2_at_least(queries.shape[0]))
    block = n_dev * bank_chunk
    bank_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('bank'))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def scalar(v):
        return jax.device_put(np.int32(v), replicated)
    # Upload and normalise block by block so the host never holds a padded copy.
    blocks = []
    for start in range(0, bank.shape[0], block):
        rows = _pad_rows(bank[start:start + block], block)
        n_valid = min(block, bank.shape[0] - start)
        blocks.append((_normalize(jax.device_put(rows, bank_sharding)), scalar(n_valid),
                       scalar(start), self_start is not None or n_valid < block))
    no_self = -2 * (bank.shape[0] + queries.shape[0] + query_chunk)
    out = []
    for start in range(0, queries.shape[0], query_chunk):
        q = queries[start:start + query_chunk]
        qn = _normalize(jax.device_put(_pad_rows(q, query_chunk), replicated))
        q_start = scalar(no_self if self_start is None else self_start + start)
        best = jax.device_put(np.full((n_dev, query_chunk, k), -np.inf, np.float32),
                              bank_sharding)
        for b, n_valid, b_start, masked in blocks:  # asynchronous dispatch: no sync here
            best = _block_max_fn(mesh, masked, k)(qn, b, n_valid, best, q_start, b_start)
        out.append((best, len(q)))
    return np.concatenate([_top_k_mean(np.asarray(best), k)[:n] for best, n in out])


def _top_k_mean(best, k):
    """The mean of the k largest over the devices' running k largest (devices, rows, k)."""
    if k == 1:
        return best[..., 0].max(axis=0)
    rows = np.moveaxis(best, 0, 1).reshape(best.shape[1], -1)
    return np.sort(rows, axis=1)[:, -k:].mean(axis=1, dtype=np.float64).astype(np.float32)


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
