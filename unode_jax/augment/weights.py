"""Per-transform weights of the hard negatives: the one interface training reads.

`negative_weights(config)` returns a float32 vector aligned with
`config.negatives.transforms`. Sources: 'uniform', 'authors' (the hand-set table of
the authors' code, per dataset), an explicit 'name=w,...' string, or 'none' (no hard
negatives at all: Table 4's "None", contrastive learning on the inlier views alone;
the vector is all zeros and training makes no negatives). 'auto'
(AutoAugOOD) depends on each normal class's images: `autoaug.class_weights`
computes it, and `negative_weights` returns None for it.
"""
from typing import Optional

import numpy as np

# The authors' code: one transform per negative, probabilities set by hand per
# dataset (their "mixup" partners are external Tiny-ImageNet images, i.e. outlier
# exposure; ours mixes inliers unless an outlier set is configured).
AUTHORS_TABLE = {
    'cifar10': {'rotation': 0.1, 'mixup': 0.9},
    'mvtec': {'cutpaste': 0.8, 'mixup': 0.2},
    'isic2018': {'cutpaste': 0.8, 'mixup': 0.2},
    'head_ct': {'cutpaste': 0.6, 'mixup': 0.4},
    'mnist': {'rotation': 0.7, 'mixup': 0.3},
    'fashion_mnist': {'rotation': 0.7, 'mixup': 0.3},
    'mnist_c': {'rotation': 0.7, 'mixup': 0.3},
}
AUTHORS_DEFAULT = {'rotation': 0.3, 'mixup': 0.7}
# The paper (appendix C.2) lists these; elastic is ours and off unless weighted.
PAPER_TRANSFORMS = (
    'rotation',
    'cutperm',
    'gaussian_noise',
    'cutout',
    'cutpaste',
    'sobel',
    'blur',
    'mixup')


def parse_weights(spec: str) -> dict:
    out = {}
    for item in spec.split(','):
        name, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f"negatives.weights: expected 'name=w,...', got {spec!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f'negatives.weights: {value!r} is not a number in {spec!r}') from None
    return out


# Weight sources that are not a 'name=w,...' string.
SOURCES = ('auto', 'uniform', 'authors', 'none')


def has_negatives(config) -> bool:
    return config.negatives.weights != 'none'


def negative_weights(config) -> Optional[np.ndarray]:
    """The weights, normalised to sum 1; None for 'auto' (computed per class from the data),
    zeros for 'none'."""
    names = tuple(config.negatives.transforms)
    spec = config.negatives.weights
    if spec == 'auto':
        return None
    if spec == 'none':
        return np.zeros(len(names), np.float32)
    if spec == 'uniform':
        table = {n: 1.0 for n in PAPER_TRANSFORMS}
    elif spec == 'authors':
        table = AUTHORS_TABLE.get(config.data.name, AUTHORS_DEFAULT)
    else:
        table = parse_weights(spec)
    unknown = sorted(set(table) - set(names))
    if spec not in ('uniform', 'authors') and unknown:
        raise ValueError(f'negatives.weights names {unknown}, not in negatives.transforms {names}')
    w = np.array([table.get(n, 0.0) for n in names], np.float32)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            f'negatives.weights must be finite, >= 0 and not all 0; got {dict(zip(names, w))}')
    return w / w.sum()
