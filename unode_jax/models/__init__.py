"""Encoders and the UNODE model; `create_model` builds one by name."""

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.models.resnet import (STEMS, BasicBlock, Bottleneck, ResNet,
                                     ResNet18, ResNet18Cifar, ResNet18CifarW16, ResNet50,
                                     TinyResNet, WideResNet, WideResNet50_2,
                                     WRN28_10)
from unode_jax.models.unode import UNODEModel

# Encoder constructors; each accepts dtype= and bn_axis_name=.
MODELS = {
    'resnet18_cifar': ResNet18Cifar,
    'resnet18_cifar_w16': ResNet18CifarW16,
    'resnet18': ResNet18,
    'resnet50': ResNet50,
    'wide_resnet50_2': WideResNet50_2,
    'wrn28_10': WRN28_10,
    'tiny': TinyResNet,
}

# The encoders whose stem config.model.stem can replace (resnet.STEMS); WRN-28-10 has its
# own 3x3 stem.
STEM_MODELS = tuple(name for name, make in MODELS.items() if make.func is ResNet)

# Encoder parameter-name prefixes to freeze when fine-tuning a pretrained
# backbone: stem + layer1 + layer2, as the authors do. WRN-28-10 is trained
# from scratch, so nothing is frozen; `tiny` has only two stages, so it
# freezes stem + layer1 to leave some encoder params trainable in tests.
_STEM_TO_LAYER2 = ('conv1', 'bn1', 'layer1_', 'layer2_')
FROZEN_PREFIXES = {
    'resnet18_cifar': _STEM_TO_LAYER2,
    'resnet18_cifar_w16': _STEM_TO_LAYER2,
    'resnet18': _STEM_TO_LAYER2,
    'resnet50': _STEM_TO_LAYER2,
    'wide_resnet50_2': _STEM_TO_LAYER2,
    'wrn28_10': (),
    'tiny': ('conv1', 'bn1', 'layer1_'),
}


def create_model(name: str, *, num_classes: int = 2, proj_dim: int = 128,
                 normalize_feature: bool = False, dtype: Any = jnp.float32,
                 bn_axis_name: Optional[str] = None,
                 stem: Optional[str] = None) -> UNODEModel:
    """UNODEModel around the encoder MODELS[name]; stem (one of STEMS) replaces its own."""
    if name not in MODELS:
        raise ValueError(
            f'Unknown model {name!r}; valid names: {", ".join(sorted(MODELS))}')
    kwargs = {}
    if stem is not None:
        if name not in STEM_MODELS:
            raise ValueError(f'model {name!r} has a fixed stem; model.stem works with '
                             f'{", ".join(STEM_MODELS)}')
        if stem not in STEMS:
            raise ValueError(f'stem must be one of {STEMS}, got {stem!r}')
        kwargs['stem'] = stem
    encoder = MODELS[name](dtype=dtype, bn_axis_name=bn_axis_name, **kwargs)
    return UNODEModel(encoder=encoder, proj_dim=proj_dim,
                      num_classes=num_classes,
                      normalize_feature=normalize_feature, dtype=dtype)


# model.dtype: the computation's (parameters, BatchNorm statistics, logits and losses stay
# float32). 'auto': bfloat16 on a GPU or TPU (twice the convolution rate of float32's TF32
# path and half the activation memory), float32 on a CPU (where bfloat16 is emulated).
DTYPES = ('auto', 'float32', 'bfloat16')
ACCELERATORS = ('gpu', 'cuda', 'rocm', 'tpu')


def compute_dtype(name, backend=None):
    """The compute dtype model.dtype means on `backend` (default: jax's default backend)."""
    if name not in DTYPES:
        raise ValueError(f'model.dtype must be one of {DTYPES}, got {name!r}')
    if name == 'auto':
        backend = jax.default_backend() if backend is None else backend
        name = 'bfloat16' if backend in ACCELERATORS else 'float32'
    return jnp.dtype(name)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# model.input_norm: how images in [0, 1] become the model's input.
INPUT_NORMS = {
    'half': lambda x: (x - 0.5) / 0.5,  # [-1, 1], the authors' CIFAR models
    'imagenet': lambda x: (x - IMAGENET_MEAN) / IMAGENET_STD,  # torchvision's weights
}


def normalize_input(x, kind):
    """x: float images in [0, 1] -> the model's input (model.input_norm)."""
    if kind not in INPUT_NORMS:
        raise ValueError(f'model.input_norm must be one of {tuple(INPUT_NORMS)}, got {kind!r}')
    return INPUT_NORMS[kind](x)


def build_model(config, num_classes=2, bn_axis_name=None):
    """The UNODEModel config.model describes (training, scoring and precise BN share it)."""
    return create_model(
        config.model.name, num_classes=num_classes, proj_dim=config.model.proj_dim,
        normalize_feature=config.model.normalize_feature,
        dtype=compute_dtype(config.model.dtype), bn_axis_name=bn_axis_name,
        stem=config.model.stem)


def _key_name(k) -> str:
    return str(getattr(k, 'key', getattr(k, 'name', k)))


def frozen_mask(params, prefixes: Sequence[str]):
    """Pytree of bools like `params`: True for leaves under encoder/<name>
    with <name> starting with one of `prefixes` (e.g. for optax.masked).

    Works with or without the outer {'params': ...} level.
    """
    prefixes = tuple(prefixes)

    def is_frozen(path, _):
        names = [_key_name(k) for k in path]
        if 'encoder' not in names:
            return False
        i = names.index('encoder')
        return i + 1 < len(names) and names[i + 1].startswith(prefixes)

    return jax.tree_util.tree_map_with_path(is_frozen, params)


__all__ = [
    'BasicBlock', 'Bottleneck', 'ResNet', 'WideResNet', 'UNODEModel',
    'ResNet18Cifar', 'ResNet18CifarW16', 'ResNet18', 'ResNet50', 'WideResNet50_2', 'WRN28_10',
    'TinyResNet', 'MODELS', 'FROZEN_PREFIXES', 'STEMS', 'STEM_MODELS', 'create_model',
    'frozen_mask', 'DTYPES', 'INPUT_NORMS', 'normalize_input', 'build_model',
]
