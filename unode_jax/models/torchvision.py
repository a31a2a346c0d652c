"""torchvision ImageNet ResNet weights onto the encoder of a UNODEModel, without torch.

The mapping is generic over our `ResNet` class (any stage sizes, widths and
block type, ImageNet stem), since its parameter names follow torchvision's:

  encoder/conv1/kernel                 conv1.weight (OIHW -> HWIO)
  encoder/bn1/{scale,bias}             bn1.{weight,bias}
  batch_stats encoder/bn1/{mean,var}   bn1.{running_mean,running_var}
  encoder/layer{i}_{j}/conv{k}, bn{k}  layer{i}.{j}.conv{k}, layer{i}.{j}.bn{k}
  encoder/layer{i}_{j}/downsample_conv downsample.0, downsample_bn downsample.1

`fc.*` (the ImageNet classifier; UNODE has its own heads) and
`num_batches_tracked` (torch's BatchNorm counter, unused with a fixed momentum)
are ignored. Every other key must fill exactly one encoder leaf with its exact
shape, and every encoder leaf must be filled, or a ValueError names the keys.
"""
import re

import numpy as np

from unode_jax.models import MODELS, ResNet
from unode_jax.runtime.errors import CheckpointFormatError
from unode_jax.torch_io import weights as torch_weights

IGNORED = re.compile(r'fc\.(weight|bias)|.*\.num_batches_tracked')

_LEAF_NAMES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
               ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
               ('batch_stats', 'var'): 'running_var'}

# torchvision's ResNets as (block, blocks per stage, stem width, inner width factor);
# used to say what a file looks like when it does not fit.
_KNOWN = {
    ('basic', (2, 2, 2, 2), 64, 1): 'resnet18',
    ('basic', (3, 4, 6, 3), 64, 1): 'resnet34',
    ('bottleneck', (3, 4, 6, 3), 64, 1): 'resnet50',
    ('bottleneck', (3, 4, 23, 3), 64, 1): 'resnet101',
    ('bottleneck', (3, 8, 36, 3), 64, 1): 'resnet152',
    ('bottleneck', (3, 4, 6, 3), 64, 2): 'wide_resnet50_2',
    ('bottleneck', (3, 4, 23, 3), 64, 2): 'wide_resnet101_2',
}


def torchvision_layout(model_name):
    """True for the MODELS entries that torchvision ImageNet weights can fill:
    our ResNet with the ImageNet stem (resnet18, resnet50, wide_resnet50_2)."""
    ctor = MODELS.get(model_name)
    return (getattr(ctor, 'func', None) is ResNet
            and ctor.keywords.get('stem', 'imagenet') == 'imagenet')


def torchvision_models():
    return tuple(name for name in MODELS if torchvision_layout(name))


def describe_state_dict(state_dict):
    """What a state dict looks like, e.g. 'a resnet50 state dict'."""
    stages = []  # Blocks per stage, while layer{i}.* keys exist.
    while blocks := {m[1] for k in state_dict
                     if (m := re.match(rf'layer{len(stages) + 1}\.(\d+)\.', k))}:
        stages.append(len(blocks))
    if 'conv1.weight' not in state_dict or 'layer1.0.conv1.weight' not in state_dict:
        return f'not a torchvision ResNet state dict (first keys: {list(state_dict)[:3]})'
    block = 'bottleneck' if 'layer1.0.conv3.weight' in state_dict else 'basic'
    stem = np.shape(state_dict['conv1.weight'])[0]
    inner = np.shape(state_dict['layer1.0.conv1.weight'])[0] / stem
    key = (block, tuple(stages), stem, inner)
    if key in _KNOWN:
        return f'a {_KNOWN[key]} state dict'
    return (f'a torchvision-layout ResNet state dict ({block} blocks {tuple(stages)}, '
            f'{stem} stem channels, inner width x{inner:g})')


def _torch_key(collection, path):
    """('params', ('layer1_0', 'downsample_conv', 'kernel')) -> 'layer1.0.downsample.0.weight'."""
    *modules, leaf = path
    names = []
    for m in modules:
        if match := re.fullmatch(r'layer(\d+)_(\d+)', m):
            names.append(f'layer{match[1]}.{match[2]}')
        else:
            names.append({'downsample_conv': 'downsample.0',
                          'downsample_bn': 'downsample.1'}.get(m, m))
    if (collection, leaf) not in _LEAF_NAMES:
        raise ValueError(f'no torchvision name for encoder leaf {collection}/{"/".join(path)}')
    return '.'.join(names + [_LEAF_NAMES[collection, leaf]])


def encoder_torch_keys(variables):
    """{torch key: (collection, path under 'encoder', leaf)} for a UNODEModel's variables.

    The leaves may be arrays or jax.ShapeDtypeStructs (from jax.eval_shape).
    """
    out = {}

    def walk(collection, tree, path):
        if isinstance(tree, dict):
            for k, v in tree.items():
                walk(collection, v, path + (k,))
        else:
            out[_torch_key(collection, path)] = collection, path, tree

    for collection in ('params', 'batch_stats'):
        walk(collection, variables[collection]['encoder'], ())
    return out


def _torch_shape(leaf, path):
    shape = tuple(leaf.shape)
    return shape[::-1][:2] + shape[:2] if path[-1] == 'kernel' else shape  # HWIO -> OIHW


def load_torchvision_encoder(variables, state_dict, model_name, *, source='the state dict'):
    """variables ({'params', 'batch_stats'} of a UNODEModel) with the encoder taken from a
    torchvision ResNet state dict (torch key -> numpy array); the heads are left as they are.

    source names the file in error messages.
    """
    if not torchvision_layout(model_name):
        raise CheckpointFormatError(
            f'model.pretrained needs a model with torchvision\'s ResNet layout '
            f'{torchvision_models()}; model.name={model_name!r} has none')
    targets = encoder_torch_keys(variables)
    given = {k: v for k, v in state_dict.items() if not IGNORED.fullmatch(k)}
    missing = [k for k in targets if k not in given]
    unexpected = [k for k in given if k not in targets]
    wrong = [f'{k} {tuple(np.shape(given[k]))} vs {_torch_shape(leaf, path)}'
             for k, (_, path, leaf) in targets.items()
             if k in given and tuple(np.shape(given[k])) != _torch_shape(leaf, path)]
    if missing or unexpected or wrong:
        def listed(what, keys):
            more = f' and {len(keys) - 5} more' if len(keys) > 5 else ''
            return f'{len(keys)} {what} ({", ".join(keys[:5])}{more})' if keys else ''
        problems = '; '.join(filter(None, [
            listed('missing keys', missing), listed('unexpected keys', unexpected),
            listed('shape mismatches (file vs model)', wrong)]))
        raise CheckpointFormatError(
            f'model.pretrained={source} looks like {describe_state_dict(state_dict)} '
            f'but model.name={model_name}: {problems}')

    new = {c: dict(variables[c]) for c in ('params', 'batch_stats')}
    encoder = {c: {} for c in new}
    for key, (collection, path, leaf) in targets.items():
        value = np.asarray(given[key], dtype=leaf.dtype)
        if path[-1] == 'kernel':
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        node = encoder[collection]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    for c in new:
        new[c]['encoder'] = encoder[c]
    return {**variables, **new}


def load_pretrained(variables, path, model_name):
    """load_torchvision_encoder with the state dict read from a torch .pth file, without torch
    (torch_weights also caches the converted file as <path>.safetensors)."""
    return load_torchvision_encoder(variables, torch_weights.load_state_dict(path), model_name,
                                    source=path)
