"""AutoAugOOD cost for one CIFAR-10-sized class, and the stability of its weights.

  python benchmarks/autoaug.py                         # RN50-sized CLIP, random weights, n=300
  python benchmarks/autoaug.py --clip_weights=RN50.pt  # OpenAI's weights
  python benchmarks/autoaug.py --part=pixels           # the offline embedder only (seconds)

clip: n originals (default 300) drawn from a 5,000-image class of 32 px images (coloured
scikit-learn digits: CIFAR's size, as no CIFAR ships offline), the 9 hard transforms, CLIP
preprocessing to 224 px. Times the transforms, the embedding (images/s), the joint 1-D
t-SNE (openTSNE and scikit-learn on the same embeddings, with their final KL objective
as the quality measure) and the divergences. Without --clip_weights the encoder has CLIP
RN50's architecture and random weights: the same FLOPs, so the same time. Then the
ranking of the transforms across seeds and subset sizes n/4, n/2, n (Spearman rank
correlation with n, seed 0), from subsets of the same embeddings.

pixels: the same ranking study with the offline pixel embedder on real digits (one class).
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unode_jax.augment import autoaug, embedders, transforms  # noqa: E402
from unode_jax.augment.weights import PAPER_TRANSFORMS  # noqa: E402
from unode_jax.data.registry import load_dataset  # noqa: E402
from unode_jax.models import clip  # noqa: E402
from unode_jax.models.clip_resnet import ModifiedResNet  # noqa: E402

RN50 = dict(layers=(3, 4, 6, 3), width=64, heads=32, output_dim=1024, image_resolution=224)


def cifar_sized_images(n, seed=0):
    """n 32x32 RGB uint8 images: digits on random colour backgrounds with texture."""
    ds = load_dataset('digits', image_size=32)
    rng = np.random.default_rng(seed)
    x = ds.x_train[rng.integers(0, len(ds.x_train), n)].astype(np.float32) / 255.0
    fg = rng.uniform(0, 1, (n, 1, 1, 3))
    bg = rng.uniform(0, 1, (n, 1, 1, 3))
    tex = rng.normal(0, 0.05, x.shape)
    y = x[..., :1] * fg + (1 - x[..., :1]) * bg + tex
    return np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)


class Encoder:
    """The CLIP embedder, from a checkpoint or RN50-sized with random weights."""

    def __init__(self, path=None, batch_size=64):
        if path:
            self.encoder = clip.load_image_encoder(path, batch_size=batch_size)
        else:
            model = ModifiedResNet(**RN50)
            variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
            self.encoder = clip.ImageEncoder(variables, RN50, batch_size=batch_size)
        self.description = dict(name='clip', weights=path or 'random RN50')

    def __call__(self, images, progress=False):
        return clip.embed(self.encoder, images, progress=progress)


def time_and_stability(args):
    images = cifar_sized_images(5000)[: args.n]
    embed = Encoder(args.clip_weights, args.batch_size)
    names = list(transforms.TRANSFORMS)
    print(f'{len(images)} originals of 32 px (of a 5,000-image class), {len(names)} transforms: '
          f'{names}', flush=True)

    t0 = time.time()
    partners = images[np.roll(np.arange(len(images)), 1)]
    key = jax.random.key(0)
    sets = [images] + [autoaug.transform_images(transforms.TRANSFORM_FNS[n],
                                                jax.random.fold_in(key, i), images, partners)
                       for i, n in enumerate(names)]
    t_transform = time.time() - t0
    all_images = np.concatenate(sets)

    embed(all_images[:embed.encoder.batch_size])  # compile
    t0 = time.time()
    h = embed(all_images, progress=True)
    t_embed = time.time() - t0
    print(f'embedding: {len(all_images)} images in {t_embed:.1f} s = '
          f'{len(all_images) / t_embed:.2f} images/s', flush=True)

    from sklearn.decomposition import PCA
    t0 = time.time()
    h50 = PCA(50, svd_solver='randomized', random_state=0).fit_transform(h)
    t_pca = time.time() - t0
    rows = []
    for backend in ('opentsne', 'sklearn'):
        t0 = time.time()
        y, kl = tsne_with_kl(h50, backend)
        t_tsne = time.time() - t0
        y = y.reshape(len(sets), -1)
        t0 = time.time()
        j, *_ = autoaug.divergences_1d(y[0], list(y[1:]), 512)
        t_div = time.time() - t0
        rows.append((backend, t_tsne, kl, t_div, j))
    print(f'\ntransforms {t_transform:.1f} s, embedding {t_embed:.1f} s, PCA {t_pca:.1f} s')
    print(f'{"t-SNE":>9} {"seconds":>8} {"final KL":>9} {"divergence s":>13}  ranking')
    for backend, t_tsne, kl, t_div, j in rows:
        order = ' > '.join(names[i] for i in np.argsort(-j))
        print(f'{backend:>9} {t_tsne:8.1f} {kl:9.3f} {t_div:13.2f}  {order}')
    rho = stats.spearmanr(rows[0][4], rows[1][4]).statistic
    print(f'Spearman rank correlation of the two backends\' divergences: {rho:.3f}')
    best = min(r[1] for r in rows)
    print(f'total with the faster t-SNE: {t_transform + t_embed + t_pca + best + rows[0][3]:.1f} s '
          f'for n={args.n}', flush=True)

    # Stability: subsets of the same embeddings (embedding a subset gives the same rows).
    h = np.asarray(h).reshape(len(sets), len(images), -1)
    sizes = [args.n // 4, args.n // 2, args.n]
    print(f'\nclip: ranking across seeds and n (Spearman with n={args.n}, seed 0)')
    stability(lambda n, seed: autoaug.weights_from_embeddings(
        h[:, autoaug.subset_indices(len(images), n, seed)], names, seed=seed), sizes)


def stability(weights_fn, sizes):
    ref = None
    for n in sizes[::-1]:
        for seed in (0, 1, 2):
            r = weights_fn(n, seed)
            j = np.array(r['divergences'])
            ref = j if ref is None else ref
            rho = stats.spearmanr(ref, j).statistic
            top = [r['transforms'][i] for i in np.argsort(-j)[:3]]
            w = sorted(r['weights'], reverse=True)[:2]
            print(f'  n={n:4d} seed={seed}  rho={rho:5.2f}  top 3: {", ".join(top):36s} '
                  f'top weights {w[0]:.3f}, {w[1]:.3f}', flush=True)


def tsne_with_kl(x, backend, seed=0, perplexity=30.0):
    """1-D t-SNE and its final KL objective (comparable across the two libraries)."""
    if backend == 'opentsne':
        import openTSNE
        emb = openTSNE.TSNE(n_components=1, perplexity=perplexity, random_state=seed,
                            initialization='pca', n_jobs=os.cpu_count()).fit(x)
        return np.asarray(emb)[:, 0], float(emb.kl_divergence)
    from sklearn.manifold import TSNE
    t = TSNE(n_components=1, perplexity=perplexity, init='pca', random_state=seed)
    return t.fit_transform(x)[:, 0], float(t.kl_divergence_)


def pixels_stability():
    ds = load_dataset('digits', image_size=32)
    images = ds.x_train[ds.y_train == 3]
    fns = {n: transforms.TRANSFORM_FNS[n] for n in PAPER_TRANSFORMS}
    embed = embedders.PixelEmbedder(16)
    print(f'\npixels, real digits (class 3, {len(images)} training images): ranking across '
          f'seeds and n (Spearman with n={len(images)}, seed 0)')
    stability(lambda n, seed: autoaug.autoaug_weights(
        images[autoaug.subset_indices(len(images), n, seed)], fns, embed, seed=seed,
        log=lambda *a: None), [30, 60, len(images)])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--part', choices=('all', 'clip', 'pixels'), default='all')
    p.add_argument('--n', type=int, default=300, help='originals embedded (of 5,000)')
    p.add_argument('--clip_weights', default=None)
    p.add_argument('--batch_size', type=int, default=64)
    args = p.parse_args()
    print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs')
    if args.part in ('all', 'pixels'):
        pixels_stability()
    if args.part in ('all', 'clip'):
        time_and_stability(args)


if __name__ == '__main__':
    main()
