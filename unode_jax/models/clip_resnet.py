"""CLIP's ResNet image encoder (OpenAI's `ModifiedResNet`) in Flax Linen, inference only.

Matches `clip/model.py` layer for layer so that OpenAI's weights port by a fixed renaming:
torch key `layer1.0.downsample.0.weight` is Flax `layer1_0/downsample_0/kernel` (numeric
path parts are joined to the name before them). Input is NHWC float32, already normalised
with CLIP's mean/std at the model's resolution (a multiple of 32).
"""

import functools
import math
import re
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EXPANSION = 4
PAD1 = ((1, 1), (1, 1))  # torch padding=1; Flax 'SAME' is asymmetric for stride 2.

Conv = functools.partial(nn.Conv, use_bias=False)
BatchNorm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-5)


def avg_pool(x, k):
    """torch AvgPool2d(k): kernel = stride = k, no padding, floor on odd sizes."""
    return x if k == 1 else nn.avg_pool(x, (k, k), strides=(k, k), padding='VALID')


class Bottleneck(nn.Module):
    """CLIP bottleneck: stride-1 convs, avg-pool before conv3 (and in the shortcut)."""
    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        out_ch = self.planes * EXPANSION
        y = nn.relu(BatchNorm(name='bn1')(Conv(self.planes, (1, 1), name='conv1')(x)))
        y = Conv(self.planes, (3, 3), padding=PAD1, name='conv2')(y)
        y = avg_pool(nn.relu(BatchNorm(name='bn2')(y)), self.stride)
        y = BatchNorm(name='bn3')(Conv(out_ch, (1, 1), name='conv3')(y))
        if self.stride > 1 or x.shape[-1] != out_ch:
            x = Conv(out_ch, (1, 1), name='downsample_0')(avg_pool(x, self.stride))
            x = BatchNorm(name='downsample_1')(x)
        return nn.relu(y + x)


class AttentionPool2d(nn.Module):
    """One query (the mean token) attending over mean + spatial tokens; returns that token."""
    num_heads: int
    output_dim: int

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f'embed dim {c} is not divisible by {self.num_heads} heads')
        pos = self.param('positional_embedding',
                         lambda key: jax.random.normal(key, (h * w + 1, c)) / math.sqrt(c))
        x = x.reshape(n, h * w, c)
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1) + pos[None]
        head_dim = c // self.num_heads

        def heads(t):  # (N, L, C) -> (N, heads, L, head_dim)
            return t.reshape(n, -1, self.num_heads, head_dim).transpose(0, 2, 1, 3)

        q = heads(nn.Dense(c, name='q_proj')(x[:, :1])) / math.sqrt(head_dim)
        k = heads(nn.Dense(c, name='k_proj')(x))
        v = heads(nn.Dense(c, name='v_proj')(x))
        attn = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2), axis=-1)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(n, c)
        return nn.Dense(self.output_dim, name='c_proj')(out)


class ModifiedResNet(nn.Module):
    """CLIP ResNet image encoder: (N, R, R, 3) normalised images -> (N, output_dim)."""
    layers: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32
    output_dim: int = 1024
    image_resolution: int = 224

    @nn.compact
    def __call__(self, x):
        r = self.image_resolution
        if x.ndim != 4 or x.shape[1:] != (r, r, 3):
            # The positional embedding fixes the feature grid, so the size must match.
            raise ValueError(f'expected images of shape (N, {r}, {r}, 3), got {x.shape}')
        x = jnp.asarray(x, jnp.float32)
        for i, (ch, stride) in enumerate(
                ((self.width // 2, 2), (self.width // 2, 1), (self.width, 1)), start=1):
            x = Conv(ch, (3, 3), (stride, stride), padding=PAD1, name=f'conv{i}')(x)
            x = nn.relu(BatchNorm(name=f'bn{i}')(x))
        x = avg_pool(x, 2)
        for i, blocks in enumerate(self.layers):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                x = Bottleneck(self.width * 2**i, stride, name=f'layer{i + 1}_{j}')(x)
        return AttentionPool2d(self.heads, self.output_dim, name='attnpool')(x)


# --------------------------------------------------------------------------------------
# Porting OpenAI / clip weights.
# --------------------------------------------------------------------------------------

_VIT_MARKERS = ('proj', 'class_embedding', 'transformer.resblocks.0.attn.in_proj_weight')


def visual_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
    """The image encoder's entries of `sd`, keys without the `visual.` prefix.

    Accepts a full CLIP state dict (text-model entries are dropped) or a visual-only one.
    BatchNorm's `num_batches_tracked` counters are dropped (unused at inference).
    """
    if any(k.startswith('visual.') for k in sd):
        visual = {k[len('visual.'):]: v for k, v in sd.items() if k.startswith('visual.')}
    else:
        visual = dict(sd)
    if any(m in visual for m in _VIT_MARKERS):
        raise ValueError('this is a Vision Transformer CLIP checkpoint; only ResNet CLIP '
                         'models (RN50, RN101, RN50x4, ...) are supported')
    if 'attnpool.positional_embedding' not in visual or 'layer1.0.conv1.weight' not in visual:
        some = ', '.join(sorted(sd)[:5]) or 'no keys'
        raise ValueError('not a CLIP ResNet image encoder: no attnpool.positional_embedding / '
                         f'layer1.0.conv1.weight (visual. prefix optional); keys start {some}')
    return {k: v for k, v in visual.items() if not k.endswith('num_batches_tracked')}


def clip_config_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
    """ModifiedResNet sizes read from a (full or visual-only) CLIP state dict, as clip's
    build_model: dict(layers, width, heads, output_dim, image_resolution)."""
    sd = visual_state_dict(sd)
    layers = tuple(len({k.split('.')[1] for k in sd if k.startswith(f'layer{b}.')})
                   for b in (1, 2, 3, 4))
    width = int(sd['layer1.0.conv1.weight'].shape[0])
    n_pos = int(sd['attnpool.positional_embedding'].shape[0])
    grid = round(math.sqrt(n_pos - 1))
    if grid * grid + 1 != n_pos or 'attnpool.c_proj.weight' not in sd or 0 in layers:
        raise ValueError(f'not a CLIP ResNet image encoder: layers {layers}, '
                         f'{n_pos} positional embeddings')
    return dict(layers=layers, width=width, heads=width * 32 // 64,
                output_dim=int(sd['attnpool.c_proj.weight'].shape[0]),
                image_resolution=grid * 32)


# Flax leaf name -> torch leaf name, per collection.
_LEAVES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
           ('params', 'bias'): 'bias', ('params', 'positional_embedding'): 'positional_embedding',
           ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}


def _torch_key(path: Sequence[str]) -> str:
    """('layer1_0', 'downsample_0', 'kernel') -> 'layer1.0.downsample.0.weight' (sans leaf
    collection); inverse of the renaming in the module docstring."""
    *mods, leaf = path
    return '.'.join([re.sub(r'_(\d+)$', r'.\1', m) for m in mods] + [leaf])


def _expected_leaves(config: dict) -> dict:
    """torch key -> (collection, flax path, shape) for a ModifiedResNet of `config`."""
    r = config['image_resolution']
    shapes = jax.eval_shape(ModifiedResNet(**config).init, jax.random.key(0),
                            jnp.zeros((1, r, r, 3), jnp.float32))
    out = {}
    for col in ('params', 'batch_stats'):
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[col])[0]:
            names = [p.key for p in path]
            key = _torch_key(names[:-1] + [_LEAVES[col, names[-1]]])
            out[key] = (col, names, leaf.shape)
    return out


def _to_flax(value: np.ndarray, flax_leaf: str) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if flax_leaf == 'kernel' and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # conv OIHW -> HWIO
    if flax_leaf == 'kernel':
        return value.T  # linear (out, in) -> (in, out)
    return value


def convert_state_dict(sd: Mapping[str, np.ndarray], config: dict | None = None) -> dict:
    """Flax variables {'params', 'batch_stats'} (float32) for ModifiedResNet(**config) from
    a full or visual-only CLIP state dict; config defaults to clip_config_from_state_dict.

    Raises ValueError naming missing, unexpected or mis-shaped keys.
    """
    visual = visual_state_dict(sd)
    config = config or clip_config_from_state_dict(visual)
    expected = _expected_leaves(config)
    missing = sorted(set(expected) - set(visual))
    unexpected = sorted(set(visual) - set(expected))
    if missing or unexpected:
        raise ValueError(f'CLIP ResNet state dict does not match {config}: '
                         f'missing {missing or "none"}; unexpected {unexpected or "none"}')
    variables = {'params': {}, 'batch_stats': {}}
    bad = []
    for key, (col, names, shape) in expected.items():
        value = _to_flax(visual[key], names[-1])
        if value.shape != shape:
            bad.append(f'{key}: {np.shape(visual[key])}')
        node = variables[col]
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    if bad:
        raise ValueError(f'CLIP ResNet state dict has wrongly shaped entries for {config}: '
                         + ', '.join(bad))
    return variables
