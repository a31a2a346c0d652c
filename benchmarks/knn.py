"""Nearest-neighbour cosine similarity (eq. 13): ours vs faiss-cpu and scikit-learn, brute force.

  python benchmarks/knn.py              # banks 50,000 x 128 and 50,000 x 2048, 10,000 queries
  python benchmarks/knn.py --quick      # banks 10,000 x {128, 2048}, 2,000 queries
  python benchmarks/knn.py --query_chunk=1024 --bank_chunk=8192 --repeats=5

All contenders get the same L2-normalised float32 embeddings (seeded Gaussian) and return
each query's largest cosine similarity to the bank:
  ours     unode_jax.evaluation.knn.max_cosine_similarity (jitted tiles, bank on the device(s));
  faiss    faiss.IndexFlatIP, add + search(k=1); optional: `pip install faiss-cpu==1.15.1`,
           skipped with a message when missing;
  sklearn  NearestNeighbors(metric='cosine', algorithm='brute', n_neighbors=1), fit +
           kneighbors (it works in chunks of sklearn's working_memory), similarity = 1 - d.
Every run is a fresh subprocess, the contenders interleaved round-robin, so load from
other processes falls on all alike; reported are the median seconds (index build/bank
upload + search; ours after a warm-up call that compiles the same tile shapes) and the
peak memory: the growth of the process's maximum resident set size (getrusage
ru_maxrss, which sees native allocations) over its high-water mark once the data were
made: it includes importing the library (also shown alone) and, for ours, compiling
and the warm-up call. Results are checked against ours to 1e-5.
"""
import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENDERS = ('ours', 'faiss', 'sklearn')


def make_data(n_bank, n_query, dim, seed=0):
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n_bank, dim), np.float32)
    queries = rng.standard_normal((n_query, dim), np.float32)
    # einsum, not np.linalg.norm: no full-size temporary to inflate the ru_maxrss baseline.
    bank /= np.sqrt(np.einsum('ij,ij->i', bank, bank))[:, None]
    queries /= np.sqrt(np.einsum('ij,ij->i', queries, queries))[:, None]
    return queries, bank


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args):
    """One timed run of one contender; writes the similarities and a JSON line."""
    queries, bank = make_data(args.n_bank, args.n_query, args.dim)
    base = maxrss_mib()
    if args.contender == 'ours':
        sys.path.insert(0, ROOT)
        import jax
        from unode_jax.evaluation import knn
        imported = maxrss_mib()
        kw = {k: v for k, v in (('query_chunk', args.query_chunk),
                                ('bank_chunk', args.bank_chunk)) if v}
        chunks = dict(knn.DEFAULT_CHUNKS, **kw)
        n_dev = len(jax.local_devices())
        # Warm-up: the same tile shapes, so the timed call does not compile (a full bank
        # block and a padded one: the plain and the masked tile program).
        knn.max_cosine_similarity(queries[:chunks['query_chunk']],
                                    bank[:n_dev * chunks['bank_chunk'] + 1], **kw)

        def run():
            return knn.max_cosine_similarity(queries, bank, **kw)
    elif args.contender == 'faiss':
        import faiss
        imported = maxrss_mib()

        def run():
            index = faiss.IndexFlatIP(bank.shape[1])
            index.add(bank)
            return index.search(queries, 1)[0][:, 0]
    else:
        from sklearn.neighbors import NearestNeighbors
        imported = maxrss_mib()

        def run():
            nn = NearestNeighbors(n_neighbors=1, metric='cosine', algorithm='brute').fit(bank)
            return 1.0 - nn.kneighbors(queries, return_distance=True)[0][:, 0]
    t0 = time.perf_counter()
    sim = np.asarray(run(), np.float32)
    seconds = time.perf_counter() - t0
    np.save(args.out, sim)
    print(json.dumps(dict(seconds=seconds, peak_mib=maxrss_mib() - base,
                          import_mib=imported - base, base_mib=base)))


def available(contender):
    if contender == 'faiss' and importlib.util.find_spec('faiss') is None:
        print('faiss not installed, skipped: pip install faiss-cpu==1.15.1')
        return False
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='banks of 10,000, 2,000 queries')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--dims', default='128,2048')
    p.add_argument('--contenders', default=','.join(CONTENDERS))
    p.add_argument('--query_chunk', type=int, default=0, help='0: the library\'s default')
    p.add_argument('--bank_chunk', type=int, default=0, help='0: the library\'s default')
    p.add_argument('--contender', help=argparse.SUPPRESS)  # child process
    p.add_argument('--dim', type=int, help=argparse.SUPPRESS)
    p.add_argument('--n_bank', type=int, help=argparse.SUPPRESS)
    p.add_argument('--n_query', type=int, help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.contender:
        return child(args)
    n_bank, n_query = (10_000, 2_000) if args.quick else (50_000, 10_000)
    contenders = [c for c in args.contenders.split(',') if available(c)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dim in map(int, args.dims.split(',')):
            runs = {c: [] for c in contenders}
            for r in range(args.repeats):
                for c in contenders:  # round-robin
                    out = os.path.join(tmp, f'{c}_{dim}.npy')
                    cmd = [sys.executable, os.path.abspath(__file__), '--contender', c,
                           '--dim', str(dim), '--n_bank', str(n_bank), '--n_query',
                           str(n_query), '--out', out, '--query_chunk', str(args.query_chunk),
                           '--bank_chunk', str(args.bank_chunk)]
                    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    runs[c].append(json.loads(res.stdout.strip().splitlines()[-1]))
                    print(f'd={dim} repeat {r} {c}: {runs[c][-1]}', flush=True)
            ref = np.load(os.path.join(tmp, f'ours_{dim}.npy')) if 'ours' in runs else None
            for c in contenders:
                sim = np.load(os.path.join(tmp, f'{c}_{dim}.npy'))
                err = float(np.abs(sim - ref).max()) if ref is not None else float('nan')
                rows.append((f'{n_bank:,} x {dim}', c,
                             statistics.median(x['seconds'] for x in runs[c]),
                             statistics.median(x['peak_mib'] for x in runs[c]),
                             statistics.median(x['import_mib'] for x in runs[c]), err))
    print(f'\n{n_query:,} queries, {args.repeats} interleaved repeats, median; peak = '
          'ru_maxrss growth once the data were made\n')
    print('| bank | contender | seconds | peak MiB (of which import) | max abs diff vs ours |')
    print('|---|---|---|---|---|')
    for bank, c, sec, mib, imp, err in rows:
        print(f'| {bank} | {c} | {sec:.3f} | {mib:.0f} ({imp:.0f}) | {err:.1e} |')
    bad = [(b, c, e) for b, c, _, _, _, e in rows if e > 1e-5]
    if bad:
        sys.exit(f'similarities differ by more than 1e-5: {bad}')


if __name__ == '__main__':
    main()
