"""AutoAugOOD's embedders psi: images -> (n, D) embeddings (sec. 3.1, appendix C.2).

  clip        CLIP's ResNet image encoder (the paper's), with CLIP's preprocessing.
  random_cnn  the pooled features of a seeded, untrained CIFAR ResNet: offline, no weights.
  pixels      downsampled pixels (PCA follows in autoaug): offline, sees pixel statistics.

`make_embedder(config)` builds the configured one; each has a `description` dict that
autoaug.json and results.json record (and that the weights' cache fingerprint covers).
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

EMBEDDERS = ('clip', 'random_cnn', 'pixels')


@functools.partial(jax.jit, static_argnums=(1,))
def _pixels(x, size):
    x = x.astype(jnp.float32) / 255.0
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), 'linear', antialias=True)
    return x.reshape(x.shape[0], -1)


class PixelEmbedder:
    """Offline stand-in for CLIP: images downsampled to size x size, flattened (PCA follows)."""

    def __init__(self, size=16, batch_size=256):
        self.size, self.batch_size = int(size), int(batch_size)
        self.description = dict(name='pixels', size=self.size,
                                note='downsampled pixels + PCA; an offline stand-in, not CLIP')

    def __call__(self, images_uint8, progress=False):
        del progress
        return np.concatenate([np.asarray(_pixels(images_uint8[i:i + self.batch_size], self.size))
                               for i in range(0, len(images_uint8), self.batch_size)])


class RandomCNNEmbedder:
    """Offline psi that sees structure: the pooled features of a randomly initialised CIFAR
    ResNet-18 (seeded, never trained; BatchNorm at its init statistics).

    Random convolutional features keep spatial structure that raw pixels do not: on
    digits (32 px) an untrained CIFAR ResNet-18's features score a one-class mean AUROC
    of 97.8 and its quarter-width version's 93.3 (pixel kNN 99.6, the 16-channel test
    model 79.5). The quarter width (autoaug.random_cnn, the default) is 16x cheaper and
    gave the same weights on digits to within 0.03.
    """

    def __init__(self, seed=0, batch_size=256, model='resnet18_cifar_w16'):
        from unode_jax.models import MODELS
        self.batch_size = int(batch_size)
        self.encoder = MODELS[model]()
        self._seed = int(seed)
        self._variables = None
        self.description = dict(name='random_cnn', model=model, seed=self._seed,
                                note='untrained CIFAR ResNet features; offline, not CLIP')

    def __call__(self, images_uint8, progress=False):
        del progress
        if self._variables is None:
            x0 = jnp.zeros((1,) + images_uint8.shape[1:], jnp.float32)
            self._variables = jax.jit(functools.partial(self.encoder.init, train=False))(
                jax.random.key(self._seed), x0)
        out = []
        for i in range(0, len(images_uint8), self.batch_size):
            chunk = images_uint8[i:i + self.batch_size]
            padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.uint8)
            padded[:len(chunk)] = chunk
            out.append(np.asarray(_random_cnn_features(self.encoder, self._variables,
                                                       padded))[:len(chunk)])
        return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=(0,))
def _random_cnn_features(encoder, variables, images):
    x = (images.astype(jnp.float32) / 255.0 - 0.5) / 0.5
    return encoder.apply(variables, x, train=False)


class ClipEmbedder:
    """CLIP ResNet image embeddings (the paper's psi), with CLIP's preprocessing."""

    def __init__(self, path, batch_size=64):
        from unode_jax.models import clip
        from unode_jax.torch_io import weights as torch_weights
        self._clip = clip
        self.encoder = clip.load_image_encoder(path, batch_size=batch_size)
        # The hash identifies the weights in the cache fingerprint, whatever the file name.
        sha = self.encoder.sha256 or torch_weights.sha256_file(path)
        self.description = dict(name='clip', weights=os.path.basename(path), sha256=sha,
                                resolution=self.encoder.resolution,
                                output_dim=self.encoder.output_dim)

    def __call__(self, images_uint8, progress=False):
        return self._clip.embed(self.encoder, images_uint8, progress=progress)


def make_embedder(config):
    """The configured psi; for CLIP the weights are found or fetched first (fails fast)."""
    c = config.autoaug
    if c.embedder == 'pixels':
        return PixelEmbedder(c.pixels_size)
    if c.embedder == 'random_cnn':
        return RandomCNNEmbedder(seed=config.seed, batch_size=c.batch_size, model=c.random_cnn)
    if c.embedder == 'clip':
        from unode_jax.models import clip
        path = clip.resolve_clip_weights(c.clip_weights, download=c.download,
                                         cache_dir=c.cache_dir)
        return ClipEmbedder(path, batch_size=c.batch_size)
    raise ValueError(f'autoaug.embedder must be one of {EMBEDDERS}, got {c.embedder!r}')
