"""Eq. (13)'s nearest-neighbour search: each query's largest cosine (or the mean of its k
largest) to a bank of embeddings, by jitted, chunked matmuls with the bank sharded over the
local devices, so memory stays bounded by the bank plus one tile per device. score.py
builds eq. (13)-(15) on it; baselines.py and benchmarks/knn.py call it directly.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.runtime import hosts
from unode_jax.training.losses import l2_normalize


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
