"""ResNet and Wide-ResNet encoders (Flax Linen), torch-compatible.

Layouts, padding and parameter names follow torchvision (ResNet v1.5) and
Zagoruyko & Komodakis' WRN so that PyTorch weights can be ported one-to-one and
parameter counts match the papers. Each encoder returns the global-average-
pooled penultimate feature of shape (N, d); there is no fc layer.
"""

import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from unode_jax.models import small_conv

ModuleDef = Any

def conv_kernel_init(key, shape, dtype=jnp.float32):
    """torchvision / WRN init: kaiming_normal_(mode='fan_out'), untruncated.

    Samples a flat vector and reshapes: with partitionable threefry (the JAX
    default), XLA:CPU takes seconds to compile a 4-D normal draw but not a 1-D
    one, which made even the tiny test model slow to init.
    """
    fan_out = math.prod(shape[:-2]) * shape[-1]  # HWIO: kh * kw * out.
    std = math.sqrt(2.0 / fan_out)
    flat = jax.random.normal(key, (math.prod(shape),), dtype)
    return (std * flat).reshape(shape)

# Explicit torch-style paddings: Flax 'SAME' pads stride-2 convs asymmetrically
# (more on the bottom/right), which shifts features relative to torch.
def conv_and_norm(dtype, train, bn_axis_name):
    """Bias-free convs and torch-default BatchNorm (momentum 0.1 = Flax 0.9, eps 1e-5)."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype, kernel_init=conv_kernel_init,
                             conv_general_dilated=small_conv.conv_general_dilated)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=dtype, axis_name=bn_axis_name)
    return conv, norm


PAD1 = ((1, 1), (1, 1))
PAD3 = ((3, 3), (3, 3))

# The stems of `ResNet` (config.model.stem): cifar = 3x3/1 conv, no pool (32 px stays 32 x 32
# into layer1); imagenet = torchvision's 7x7/2 conv + 3x3/2 max-pool (a 32 px image is 8 x 8
# after it); imagenet_224 = the image bilinearly upsampled to 224 px, then imagenet's stem
# (the parameters of imagenet, so ImageNet weights load; WRN-50-2: 63x the FLOPs of imagenet
# at 32 px, 3.2x cifar's; benchmarks/flops.py).
STEMS = ('cifar', 'imagenet', 'imagenet_224')
UPSAMPLE_SIZE = 224

# torch MaxPool2d(3, 2, padding=1). nn.max_pool pads with the reduction's init
# value (-inf), so padding never wins the max, as in torch.
torch_max_pool = functools.partial(
    nn.max_pool, window_shape=(3, 3), strides=(2, 2), padding=PAD1)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), stride on the first conv."""
    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    width: Optional[int] = None  # Unused; keeps one signature with Bottleneck.
    expansion = 1

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides),
                      padding=PAD1, name='conv1')(x)
        y = nn.relu(self.norm(name='bn1')(y))
        y = self.conv(self.filters, (3, 3), padding=PAD1, name='conv2')(y)
        y = self.norm(name='bn2')(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                                 padding='VALID', name='downsample_conv')(residual)
            residual = self.norm(name='downsample_bn')(residual)
        return nn.relu(residual + y)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: stride on the 3x3 conv, as torchvision."""
    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    width: Optional[int] = None  # Inner width; defaults to `filters`.
    expansion = 4

    @nn.compact
    def __call__(self, x):
        width = self.width or self.filters
        residual = x
        y = self.conv(width, (1, 1), padding='VALID', name='conv1')(x)
        y = nn.relu(self.norm(name='bn1')(y))
        y = self.conv(width, (3, 3), (self.strides, self.strides),
                      padding=PAD1, name='conv2')(y)
        y = nn.relu(self.norm(name='bn2')(y))
        y = self.conv(self.filters * 4, (1, 1), padding='VALID', name='conv3')(y)
        y = self.norm(name='bn3')(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1),
                                 (self.strides, self.strides), padding='VALID',
                                 name='downsample_conv')(residual)
            residual = self.norm(name='downsample_bn')(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """torchvision-style ResNet encoder returning pooled features (N, d).

    stem='imagenet': 7x7/2 conv + BN + ReLU + 3x3/2 max-pool (torchvision).
    stem='cifar': 3x3/1 conv + BN + ReLU, no pool (the authors' CIFAR ResNet).
    stem='imagenet_224': the input resized to 224 x 224 (bilinear), then 'imagenet'.
    """
    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_filters: int = 64
    width_per_group: int = 64
    stem: str = 'imagenet'
    dtype: Any = jnp.float32
    bn_axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv, norm = conv_and_norm(self.dtype, train, self.bn_axis_name)

        x = jnp.asarray(x, self.dtype)
        if self.stem == 'imagenet_224' and x.shape[1:3] != (UPSAMPLE_SIZE, UPSAMPLE_SIZE):
            x = jax.image.resize(x, (x.shape[0], UPSAMPLE_SIZE, UPSAMPLE_SIZE, x.shape[3]),
                                 'bilinear')
        if self.stem in ('imagenet', 'imagenet_224'):
            x = conv(self.num_filters, (7, 7), (2, 2), padding=PAD3, name='conv1')(x)
            x = nn.relu(norm(name='bn1')(x))
            x = torch_max_pool(x)
        elif self.stem == 'cifar':
            x = conv(self.num_filters, (3, 3), padding=PAD1, name='conv1')(x)
            x = nn.relu(norm(name='bn1')(x))
        else:
            raise ValueError(f'stem must be one of {STEMS}, got {self.stem!r}')

        for i, block_size in enumerate(self.stage_sizes):
            filters = self.num_filters * 2**i
            # torchvision: width = planes * base_width / 64 (groups=1).
            width = int(filters * self.width_per_group / 64)
            for j in range(block_size):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block_cls(filters, conv=conv, norm=norm, strides=strides,
                                   width=width, name=f'layer{i + 1}_{j}')(x)
        return jnp.mean(x, axis=(1, 2))


class WideBasic(nn.Module):
    """Pre-activation WRN block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3."""
    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = True):
        o = nn.relu(self.norm(name='bn1')(x))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides),
                      padding=PAD1, name='conv1')(o)
        y = nn.relu(self.norm(name='bn2')(y))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = self.conv(self.filters, (3, 3), padding=PAD1, name='conv2')(y)
        if x.shape != y.shape:
            # As the reference WRN code, a projecting shortcut reads the
            # pre-activated input; an identity shortcut reads the raw input.
            x = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                          padding='VALID', name='shortcut_conv')(o)
        return x + y


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis) encoder returning (N, 64k)."""
    depth: int = 28
    widen_factor: int = 10
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool = True):
        if (self.depth - 4) % 6:
            raise ValueError(f'WRN depth must be 6n+4, got {self.depth}')
        n = (self.depth - 4) // 6
        conv, norm = conv_and_norm(self.dtype, train, self.bn_axis_name)

        x = jnp.asarray(x, self.dtype)
        x = conv(16, (3, 3), padding=PAD1, name='conv1')(x)
        for i, filters in enumerate((16, 32, 64)):
            for j in range(n):
                strides = 2 if i > 0 and j == 0 else 1
                x = WideBasic(filters * self.widen_factor, conv=conv, norm=norm,
                              strides=strides, dropout_rate=self.dropout_rate,
                              name=f'layer{i + 1}_{j}')(x, train=train)
        x = nn.relu(norm(name='bn_final')(x))
        return jnp.mean(x, axis=(1, 2))


ResNet18Cifar = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, stem='cifar')
ResNet18 = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
WideResNet50_2 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck,
    width_per_group=128)
WRN28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)

# CPU-sized (the quick start): the authors' CIFAR ResNet-18 at a quarter of its width
# (16-32-64-128 channels, a 128-d feature, 0.7M parameters instead of 11M).
ResNet18CifarW16 = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, num_filters=16,
    stem='cifar')

# Test-sized: two single-block stages, 8 -> 16 channels, 16-d feature.
TinyResNet = functools.partial(
    ResNet, stage_sizes=(1, 1), block_cls=BasicBlock, num_filters=8,
    stem='cifar')
