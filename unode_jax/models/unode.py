"""UNODE network: encoder f, projection head g and classification head h."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


class UNODEModel(nn.Module):
    """Returns dict(feature=f, z=g(f), logits=h(f)), all float32.

    g (proj_hidden -> ReLU -> proj_out) feeds the contrastive loss; h (head)
    feeds the cross-entropy loss. With num_classes=2, class 1 is inlier and
    class 0 hard negative; a (K+1)-way head uses the same field.
    """
    encoder: nn.Module  # Any module mapping (x, train=...) to (N, d).
    proj_dim: int = 128
    num_classes: int = 2
    # The authors' pretrained-backbone setting L2-normalises f before both
    # heads; `feature` is then the normalised f the heads see.
    normalize_feature: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        f = jnp.asarray(self.encoder(x, train=train), jnp.float32)
        if self.normalize_feature:
            # torch F.normalize: f / max(||f||, 1e-12).
            f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
        d = f.shape[-1]
        z = nn.Dense(d, dtype=self.dtype, name='proj_hidden')(f)
        z = nn.Dense(self.proj_dim, dtype=self.dtype, name='proj_out')(nn.relu(z))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(f)
        return dict(feature=f, z=jnp.asarray(z, jnp.float32),
                    logits=jnp.asarray(logits, jnp.float32))


# head.kind: binary = eq. (12)'s 2-way head (class 1 = inlier, 0 = hard negative) |
# transform = one class per hard transform of negatives.transforms, then the identity
# (class K = inlier): the head names the transform that made a negative (GEOM, GOAD,
# CSI's shift head), and the score's term is its log-probability (score.HEAD_TERMS).
HEAD_KINDS = ('binary', 'transform')


def head_classes(config, labels=None):
    """The head's number of classes: K + 1 with the labeled setting's K inlier labels,
    len(negatives.transforms) + 1 with the transform head, else 2."""
    if labels is not None:
        return int(np.asarray(labels).max()) + 2
    if config.head.kind == 'transform':
        return len(config.negatives.transforms) + 1
    return 2
