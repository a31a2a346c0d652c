"""Test-time copies (score.copies): each image scored beside hard-transformed copies of it.

CSI's transform ensemble (Tack et al., 2020: each image under each rotation, compared
with the bank under the same rotation), in UNODE's terms and for any of its hard
transforms: a copy T(x) of a test image is compared with the training images under the
same T (eq. 13 per copy), and the head's term of a copy is the probability of its right
answer: "hard negative" for the binary head (a normal image, once turned, should be
called a negative), the transform that made it for the transform head
(head.kind='transform', whose term is a log-probability). Eq. (15)'s two terms are the
weighted means over the image and its copies, each copy weighted by AutoAugOOD:

  v(image) = 1,   v(copy under t) = K * w_t / n_t

with w the hard transforms' weights (summing to 1 over the K transforms), n_t the copies
t makes (rotation: the three turns, 90, 180 and 270 degrees, as CSI; any other transform:
one draw of its own random parameters, keyed by the copy and the image's index, so a set
gives the same copies however it is batched). Uniform weights give every transform the
image's own weight; a transform AutoAugOOD finds harmless (rotation on textures) counts
less. mixup needs a partner image and makes no copy.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.augment.transforms import TRANSFORMS, transform_branches

NO_COPY = ('mixup',)  # Needs a second image: it makes no test-time copy.
COPY_TRANSFORMS = tuple(t for t in TRANSFORMS if t not in NO_COPY)  # score.copies' entries
ROTATION_TURNS = (1, 2, 3)  # Quarter turns of the rotation copies (np.rot90's k).


@dataclasses.dataclass(frozen=True)
class Copy:
    transform: str
    turn: int  # rotation: the quarter turns; other transforms: 0
    index: int  # its position among the copies, which keys its random parameters


def copy_list(names):
    """The copies that the transforms `names` (score.copies) make, in order."""
    out = []
    for name in names:
        if name not in TRANSFORMS or name in NO_COPY:
            raise ValueError(f'score.copies: {name!r} makes no copy; allowed: '
                             f'{tuple(t for t in TRANSFORMS if t not in NO_COPY)}')
        for turn in (ROTATION_TURNS if name == 'rotation' else (0,)):
            out.append(Copy(name, turn, len(out)))
    return tuple(out)


def copy_weights(names, transforms, weights):
    """v of each copy (module docstring): K * w_t / n_t, w the weights of `transforms`
    (normalised to sum 1), K = len(transforms)."""
    w = np.asarray(weights, np.float64)
    if w.shape != (len(transforms),) or w.sum() <= 0:
        raise ValueError(f'need one weight per transform of {tuple(transforms)}, got {w}')
    w = w / w.sum()
    copies = copy_list(names)
    made = {t: sum(c.transform == t for c in copies) for t in names}
    return np.array([len(transforms) * w[list(transforms).index(c.transform)] / made[c.transform]
                     for c in copies], np.float64)


def copy_labels(names, transforms, head):
    """The head's right answer for each copy: class 0 (hard negative) for the binary head,
    the transform's index in `transforms` for the transform head."""
    return np.array([list(transforms).index(c.transform) if head == 'transform' else 0
                     for c in copy_list(names)], np.int64)


def plan(config, negative_weights, head):
    """dict(weight (C,), label (C,)) of config.score.copies for a model trained with
    negative_weights (None: uniform); None when score.copies is empty."""
    names, transforms = tuple(config.score.copies), tuple(config.negatives.transforms)
    if not names:
        return None
    missing = sorted(set(names) - set(transforms))
    if missing:
        raise ValueError(f'score.copies {missing} are not among negatives.transforms')
    w = np.ones(len(transforms)) if negative_weights is None else negative_weights
    return dict(weight=copy_weights(names, transforms, w),
                label=copy_labels(names, transforms, head))


def make_copy(x, first, copy: Copy):
    """The copy of a float batch x (B, H, W, 3) in [0, 1] whose first row is row `first` of
    its set (jittable; `copy` static)."""
    if copy.transform == 'rotation':
        return jnp.rot90(x, k=copy.turn, axes=(1, 2))
    fn, = transform_branches((copy.transform,), None)
    base = jax.random.fold_in(jax.random.key(0), copy.index)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(first + jnp.arange(x.shape[0]))
    return jax.vmap(fn)(keys, x, x)
