"""Does AutoAugOOD adapt? Its weights per class and per dataset, where rotation is harmless
(textures) and where it is not (digits, Fashion-MNIST).

  python benchmarks/autoaug_weights.py                               # tau 1, ~2 min
  python benchmarks/autoaug_weights.py --taus=0.25,1 --configs=digits,textures

For each CPU config (its data, image size and AutoAugOOD settings: the offline random-CNN
embedder, 64 images, js divergence) and each class, the weights AutoAugOOD gives the hard
transforms, computed as a run computes them (autoaug.class_weights) from the class's
training images (all of them: a run with predict.holdout > 0 uses 80% of them, so its
weights differ in the last digits). Prints each class's weights, largest first, with the
rank of `--transform` (default rotation), then per dataset each transform's mean weight
over the classes. --json_out keeps every weight. Training images only; no test image read.
"""
import argparse
import importlib
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unode_jax.augment import autoaug, embedders  # noqa: E402
from unode_jax.data.registry import load_dataset  # noqa: E402


def dataset_weights(config, tau, cache, log=lambda *a: None):
    """{class: (transform names, weights, entropy)} for every class of config's dataset."""
    d = config.data
    ds = load_dataset(d.name, image_size=d.image_size, path=d.get('path'))
    embed = embedders.make_embedder(config)
    config.autoaug.tau = tau
    out = {}
    for c in range(ds.num_classes):
        _, r = autoaug.class_weights(config, os.path.join(cache, d.name, str(c), str(tau)),
                                     ds.x_train[ds.y_train == c], embed, log=log)
        out[ds.class_names[c]] = (r['transforms'], r['weights'], r['entropy'])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', default='textures,digits,fashion_mnist_cpu,faces')
    parser.add_argument('--taus', default='1')
    parser.add_argument('--transform', default='rotation')
    parser.add_argument('--json_out', default=None)
    args = parser.parse_args(argv)
    cache = tempfile.mkdtemp(prefix='autoaug_weights_')
    result = {}
    for name in args.configs.split(','):
        for tau in map(float, args.taus.split(',')):
            config = importlib.import_module(f'configs.{name}').get_config()
            per_class = dataset_weights(config, tau, cache)
            ranks, means = [], {}
            for cls, (names, w, h) in per_class.items():
                order = sorted(zip(w, names), reverse=True)
                ranks.append([t for _, t in order].index(args.transform) + 1)
                print(f'{name} tau {tau:g} {cls}: {args.transform} rank {ranks[-1]}/{len(w)}, '
                      f'entropy {h:.2f}; ' + ' '.join(f'{t} {v:.3f}' for v, t in order),
                      flush=True)
                for t, v in zip(names, w):
                    means.setdefault(t, []).append(v)
            means = {t: float(np.mean(v)) for t, v in means.items()}
            print(f'{name} tau {tau:g} mean over {len(per_class)} classes: {args.transform} '
                  f'{means[args.transform]:.3f} (mean rank {np.mean(ranks):.1f}); ' +
                  ' '.join(f'{t} {v:.3f}' for t, v in sorted(means.items(), key=lambda kv: -kv[1])),
                  flush=True)
            result[f'{name}/tau={tau:g}'] = dict(
                classes={c: dict(zip(n, w), entropy=h) for c, (n, w, h) in per_class.items()},
                mean=means, mean_rank=float(np.mean(ranks)))
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
