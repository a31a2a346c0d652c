"""AutoAugOOD (sec. 3.1, appendix C.2): the hard negatives' weights, computed from the data.

For the normal class's training images x_1..x_N (or a seeded subset of n of them):

  H = psi(x_i), H_k = psi(s_k(x_i))       embeddings of the originals and of each transform
  joint 1-D t-SNE of all of them           -> P (originals) and Q_k (transform k)
  p, q_k = Gaussian KDEs of P, Q_k on one shared grid, normalised to sum 1
  j_k = D(p, q_k)                          autoaug.divergence (below)
  w = softmax(j / tau)                     eq. (8) with tau = 1

autoaug.divergence:
  jeffreys  eq. (6)-(7) literally: KL(p || q_k) + KL(q_k || p). t-SNE pulls the transformed
            sets apart, so the KDEs barely overlap and j_k is set by the density floor
            (up to ~55 with 1e-12); softmax of values tens apart is one-hot: one transform
            gets all the weight and the paper's "stochastic yet proportional selection"
            never happens (measured on digits: max weight 0.9995-1.0000 in every class).
  js        the Jensen-Shannon divergence the paper's text names, divided by log 2 so it
            lies in [0, 1] (bounded: disjoint supports give 1, not a floor-set number), so
            softmax(j / tau) keeps every transform in play and tau sets how much the
            divergence counts.
The entropy of the weights (nats; log K = uniform, 0 = one-hot) is recorded.

psi is CLIP's ResNet image encoder (the paper's) or an offline stand-in
(unode_jax/augment/embedders.py). Embeddings are reduced by PCA before t-SNE, as is
usual for t-SNE inputs. Only training images are used, never test images (the
authors' notebook used the test set). The authors' notebook compared KDE values at
index-aligned sample points; the densities here live on a shared grid so that
KL(p || q) is a divergence between two distributions.

`class_weights` caches its result in <workdir>/autoaug.json with a fingerprint of
the data, the transforms and every setting, and draws autoaug.png.
"""
import functools
import hashlib
import json
import os
import time
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from sklearn.decomposition import PCA

from unode_jax.augment import transforms as transforms_lib
from unode_jax.runtime.errors import DamagedFileError
from unode_jax.runtime.files import read_json

VERSION = 2  # Bump when the computation changes, to invalidate old caches.
TSNE_BACKENDS = ('opentsne', 'sklearn')
DIVERGENCES = ('js', 'jeffreys')
_EPS = 1e-12  # Density floor on the grid: keeps log p / q finite where a KDE underflows.


# ----------------------------------------------------------------------------
# The divergence (eq. 6-8).
# ----------------------------------------------------------------------------


def symmetric_kl(p, q):
    """J(p || q) = KL(p || q) + KL(q || p) of two discrete distributions (eq. 6-7).

    p, q are non-negative vectors on the same grid; each is floored at _EPS and
    renormalised, so disjoint supports give a large finite value.
    """
    p = np.maximum(np.asarray(p, np.float64), 0) + _EPS
    q = np.maximum(np.asarray(q, np.float64), 0) + _EPS
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))


def jensen_shannon(p, q):
    """JS(p, q) / log 2 in [0, 1]: (KL(p || m) + KL(q || m)) / (2 log 2), m = (p + q) / 2.

    Finite without any floor (m > 0 wherever p or q is); 0 iff p = q, 1 iff the
    supports are disjoint.
    """
    p = np.maximum(np.asarray(p, np.float64), 0)
    q = np.maximum(np.asarray(q, np.float64), 0)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return np.sum(a[nz] * np.log(a[nz] / m[nz]))

    return float(np.clip((kl(p) + kl(q)) / (2 * np.log(2)), 0.0, 1.0))


DIVERGENCE_FNS = {'js': jensen_shannon, 'jeffreys': symmetric_kl}
assert tuple(DIVERGENCE_FNS) == DIVERGENCES


def entropy(weights):
    """Shannon entropy (nats) of a weight vector: 0 one-hot, log K uniform."""
    w = np.asarray(weights, np.float64)
    w = w[w > 0] / w.sum()
    return float(-np.sum(w * np.log(w)))


def softmax_weights(divergences, tau=1.0):
    """w = softmax(j / tau) (eq. 8): the more a transform moves the data, the more it is used."""
    z = np.asarray(divergences, np.float64) / tau
    z = np.exp(z - z.max())
    return z / z.sum()


def shared_grid(points_1d, grid_size, pad=0.1):
    """grid_size points spanning every set, widened by `pad` of the range on each side."""
    lo, hi = float(np.min(points_1d)), float(np.max(points_1d))
    span = max(hi - lo, 1e-6)
    return np.linspace(lo - pad * span, hi + pad * span, grid_size)


def kde_on_grid(points, grid):
    """Gaussian KDE (scipy, Scott's bandwidth) of 1-D points, normalised to sum 1 on grid."""
    points = np.asarray(points, np.float64)
    if np.ptp(points) == 0:  # A degenerate set: all mass at its value.
        d = np.zeros_like(grid)
        d[np.argmin(np.abs(grid - points[0]))] = 1.0
        return d
    d = stats.gaussian_kde(points, bw_method='scott')(grid)
    return d / d.sum()


def divergences_1d(p_points, q_points_list, grid_size=512, divergence='jeffreys'):
    """j_k for the 1-D originals P and each 1-D transformed set Q_k, on one shared grid.

    Returns (divergences (K,), grid (G,), p density (G,), q densities (K, G)).
    """
    grid = shared_grid(np.concatenate([p_points] + list(q_points_list)), grid_size)
    p = kde_on_grid(p_points, grid)
    qs = np.stack([kde_on_grid(q, grid) for q in q_points_list])
    if divergence not in DIVERGENCE_FNS:
        raise ValueError(f'autoaug.divergence must be one of {DIVERGENCES}, got {divergence!r}')
    fn = DIVERGENCE_FNS[divergence]
    return np.array([fn(p, q) for q in qs]), grid, p, qs


# ----------------------------------------------------------------------------
# 1-D t-SNE.
# ----------------------------------------------------------------------------


SINGLE_THREAD_TSNE = 5000  # sklearn's t-SNE runs on one thread up to this many points.


def tsne_1d(x, *, perplexity=30.0, seed=0, backend='sklearn'):
    """A joint 1-D t-SNE of x (n, d); perplexity is lowered for tiny n, as t-SNE needs."""
    x = np.asarray(x, np.float64)
    perplexity = float(min(perplexity, max((len(x) - 1) / 3.0, 1.0)))
    if backend == 'opentsne':
        try:
            import openTSNE
        except ImportError:
            raise ImportError("autoaug.tsne='opentsne' needs `pip install openTSNE`; "
                              "or use autoaug.tsne='sklearn'") from None
        emb = openTSNE.TSNE(n_components=1, perplexity=perplexity, random_state=seed,
                            initialization='pca', n_jobs=os.cpu_count() or 1,
                            verbose=False).fit(x)
        return np.asarray(emb, np.float64)[:, 0]
    if backend == 'sklearn':
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits
        tsne = TSNE(n_components=1, perplexity=perplexity, init='pca', random_state=seed)
        # One OpenMP thread up to SINGLE_THREAD_TSNE points: Barnes-Hut's threads spin on
        # cores other work shares (on 2 busy cores 30 points took 19.6 s with 2 threads,
        # 0.15 s with 1; 200 points 27.9 s and 0.78 s), and these sizes gain nothing from
        # more threads.
        limit = 1 if len(x) <= SINGLE_THREAD_TSNE else None
        with threadpool_limits(limits=limit, user_api='openmp'):
            return tsne.fit_transform(x)[:, 0].astype(np.float64)
    raise ValueError(f'autoaug.tsne must be one of {TSNE_BACKENDS}, got {backend!r}')


# ----------------------------------------------------------------------------
# Transformed copies and embeddings.
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0,))
def _transform_chunk(fn, keys, x, partners):
    f = lambda u: u.astype(jnp.float32) / 255.0
    y = jax.vmap(fn)(keys, f(x), f(partners))
    return jnp.round(jnp.clip(y, 0, 1) * 255).astype(jnp.uint8)


def transform_images(fn, key, images, partners, chunk=256):
    """s_k applied to every image (uint8 in, uint8 out, as a saved image), one key each."""
    keys = jax.random.split(key, len(images))
    out = []
    for i in range(0, len(images), chunk):
        sl = slice(i, i + chunk)
        out.append(np.asarray(_transform_chunk(fn, keys[sl], images[sl], partners[sl])))
    return np.concatenate(out)


# ----------------------------------------------------------------------------
# The weights.
# ----------------------------------------------------------------------------


def subset_indices(n, num_images, seed):
    """A seeded subset of num_images of range(n), sorted; all of them when num_images is 0."""
    if not num_images or num_images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, num_images, replace=False))


def autoaug_weights(images, transforms: Mapping[str, Callable], embed, *, partners=None,
                    seed=0, tau=1.0, perplexity=30.0, pca_dim=50, grid_size=512,
                    tsne='sklearn', divergence='jeffreys', log=print):
    """AutoAugOOD on uint8 images (n, H, W, 3); returns a dict of plain values.

    transforms: name -> fn(key, x, partner) on one float image in [0, 1] (the
    training transforms, with the training parameters). partners: the mixup
    partners (n, H, W, 3) uint8; default another image of the set (a seeded
    derangement). embed: uint8 images -> (n, D) embeddings.
    """
    n = len(images)
    names = list(transforms)
    rng = np.random.default_rng(seed)
    if partners is None:
        order = rng.permutation(n)
        partners = images[np.roll(order, 1)][np.argsort(order)]  # Never an image itself.
    t0 = time.time()
    key = jax.random.key(seed)
    sets = [images] + [transform_images(transforms[k], jax.random.fold_in(key, i), images, partners)
                       for i, k in enumerate(names)]
    t_transform = time.time() - t0
    t0 = time.time()
    log(f'AutoAugOOD: embedding {n} images and {len(names)} transformed copies')
    h = embed(np.concatenate(sets), progress=True)
    t_embed = time.time() - t0
    result = weights_from_embeddings(np.asarray(h).reshape(len(sets), n, -1), names, seed=seed,
                                     tau=tau, perplexity=perplexity, pca_dim=pca_dim,
                                     grid_size=grid_size, tsne=tsne, divergence=divergence)
    result['seconds'].update(transform=t_transform, embed=t_embed)
    return result


def weights_from_embeddings(h, names, *, seed=0, tau=1.0, perplexity=30.0, pca_dim=50,
                            grid_size=512, tsne='sklearn', divergence='jeffreys'):
    """The weights from embeddings h (1 + K, n, D): row 0 the originals, row k transform k."""
    sets, n = h.shape[:2]
    t0 = time.time()
    h = np.asarray(h, np.float64).reshape(sets * n, -1)
    dim = min(pca_dim, h.shape[1], h.shape[0])
    if dim < h.shape[1]:
        h = PCA(dim, svd_solver='randomized', random_state=seed).fit_transform(h)
    y = tsne_1d(h, perplexity=perplexity, seed=seed, backend=tsne).reshape(sets, n)
    t_tsne = time.time() - t0
    t0 = time.time()
    j, grid, p, qs = divergences_1d(y[0], list(y[1:]), grid_size, divergence)
    w = softmax_weights(j, tau)
    t_div = time.time() - t0
    return dict(transforms=list(names), weights=[float(v) for v in w],
                divergences=[float(v) for v in j], divergence=divergence,
                entropy=entropy(w), max_entropy=float(np.log(len(w))), n=n, seed=seed, tau=tau,
                perplexity=perplexity, pca_dim=dim, grid_size=grid_size, tsne=tsne,
                seconds=dict(tsne=t_tsne, divergence=t_div),
                grid=grid.tolist(), density_original=p.tolist(),
                density_transformed=qs.tolist())


def format_table(result, title=''):
    div = result.get('divergence', 'jeffreys')
    lines = [f'AutoAugOOD weights{title}: embedder {result["embedder"]["name"]}, '
             f'n={result["n"]}, {div} divergence, tau={result["tau"]:g}, entropy '
             f'{entropy(result["weights"]):.2f} of {np.log(len(result["weights"])):.2f} nats',
             f'{"transform":>16} {"j_k":>10} {"weight":>8}']
    for name, j, w in sorted(zip(result['transforms'], result['divergences'], result['weights']),
                             key=lambda t: -t[2]):
        lines.append(f'{name:>16} {j:10.4f} {w:8.4f}')
    return '\n'.join(lines)


def plot_densities(result, path):
    """autoaug.png: the 1-D densities of the originals and of each transform, with j and w.
    A Figure on its own Agg canvas: the user's pyplot backend is left as it is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    grid = np.asarray(result['grid'])
    ax.fill_between(grid, result['density_original'], color='0.8', label='originals (P)')
    for name, q, j, w in zip(result['transforms'], result['density_transformed'],
                             result['divergences'], result['weights']):
        ax.plot(grid, q, label=f'{name}: J={j:.2f}, w={w:.3f}')
    ax.set_xlabel('1-D t-SNE coordinate')
    ax.set_ylabel('density (sums to 1 on the grid)')
    ax.set_title(f'AutoAugOOD, embedder {result["embedder"]["name"]}, n={result["n"]}, '
                 f'{result.get("divergence", "jeffreys")}')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@functools.lru_cache(maxsize=None)
def _transform_fn(name, params=()):
    # One object per (name, params): it is a static argument of the jitted transform, so
    # a sweep over classes compiles each transform once.
    return functools.partial(transforms_lib.TRANSFORM_FNS[name], **dict(params))


def training_transforms(config):
    """The configured transforms with the training parameters: name -> fn(key, x, partner)."""
    params = {'mixup': (('lam_range', tuple(config.negatives.mixup_lam)),)}
    return {n: _transform_fn(n, params.get(n, ())) for n in config.negatives.transforms}


def fingerprint(config, images, embedder_description, outliers=None):
    """sha256 of the data, the transform set and every setting the weights depend on."""
    h = hashlib.sha256()
    for a in (images,) + ((outliers,) if outliers is not None else ()):
        h.update(str((a.shape, str(a.dtype))).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    c = config.autoaug
    settings = dict(version=VERSION, transforms=list(config.negatives.transforms),
                    mixup_lam=list(config.negatives.mixup_lam), seed=config.seed,
                    num_images=c.num_images, tau=c.tau, perplexity=c.perplexity,
                    pca_dim=c.pca_dim, grid_size=c.grid_size, tsne=c.tsne,
                    divergence=c.divergence, embedder=embedder_description)
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def class_weights(config, workdir, x_train, embedder, outliers=None, log=print):
    """The weights for this normal class's training images, cached in <workdir>/autoaug.json.

    Returns (weights aligned with config.negatives.transforms, the result dict).
    """
    path = os.path.join(workdir, 'autoaug.json')
    fp = fingerprint(config, x_train, embedder.description, outliers)
    if os.path.exists(path):
        try:
            with open(path) as f:
                cached = json.load(f)
        except (OSError, ValueError):
            cached = {}
        if cached.get('fingerprint') == fp:
            log(format_table(cached, ' (cached)'))
            return np.asarray(cached['weights'], np.float32), cached
    c = config.autoaug
    idx = subset_indices(len(x_train), c.num_images, config.seed)
    images = x_train[idx]
    partners = None
    if outliers is not None:  # Training mixes with outliers: measure the same transform.
        pick = np.random.default_rng(config.seed).integers(0, len(outliers), len(images))
        partners = outliers[pick]
    result = autoaug_weights(images, training_transforms(config), embedder, partners=partners,
                             seed=config.seed, tau=c.tau, perplexity=c.perplexity,
                             pca_dim=c.pca_dim, grid_size=c.grid_size, tsne=c.tsne,
                             divergence=c.divergence, log=log)
    result.update(embedder=embedder.description, fingerprint=fp, n_available=len(x_train))
    os.makedirs(workdir, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)
    plot_densities(result, os.path.join(workdir, 'autoaug.png'))
    log(format_table(result))
    return np.asarray(result['weights'], np.float32), result


def cached_weights(workdir) -> Optional[dict]:
    """The autoaug.json of a trained workdir, if any (for eval-only runs)."""
    path = os.path.join(workdir, 'autoaug.json')
    try:
        return read_json(path, 'not used')
    except (FileNotFoundError, DamagedFileError):
        return None  # Only recorded beside the results: nothing depends on it.
