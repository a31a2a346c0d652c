"""Convolutions whose output is at most 2 x 2 pixels, as one dense matmul on the CPU.

XLA:CPU's convolution is an order of magnitude slow when the output has a few pixels:
the last stage of the quick start's ResNet (resnet18_cifar_w16 at 16 px: 2 x 2 x 128)
took most of each training step. Measured on 2 cores, ms, forward; forward + gradient
(`python benchmarks/small_conv.py`, batch 64):

  3x3 conv, input -> output            lax.conv         dense matmul (this module)
  2x2x128 -> 2x2x128                   9.0; 18.4        1.4;  2.6
  4x4x64 -> 2x2x128, stride 2          1.0;  7.6        1.3;  3.2
  2x2x512 -> 2x2x512 (batch 32)        223;  448         13;   40
  4x4x128 -> 4x4x128 (left to lax)     3.8;  9.1       10.3; 29.6
  1x1, 4x4x64 -> 2x2x128 (to lax)      0.4;  0.9        1.3;  3.3

The quick start's training step went from 0.120 to 0.082 s (benchmarks/train_step.py).

`conv_general_dilated` has lax.conv_general_dilated's signature (it is nn.Conv's
`conv_general_dilated` argument, so parameters and checkpoints are unchanged) and
computes such a convolution as one dot with the kernel spread into a dense matrix: the
same sums in another order (float32 results agree to ~1e-5). Every other convolution, and every backend but the CPU, goes to
lax unchanged.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Output pixels (height x width) up to which the CPU computes a convolution with a kernel
# larger than 1 x 1 (a 1 x 1 one is a matmul for lax already) as a dense matmul ...
MAX_OUTPUT_PIXELS = 4
MAX_INPUT_PIXELS = 16  # ... from at most this many input pixels (the matrix grows with both).
# flax's NHWC inputs, HWIO kernels, NHWC outputs.
NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
    """lax.conv_general_dilated, with small-output 2-D convolutions on the CPU as a matmul."""
    pads = matmul_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                       dimension_numbers, feature_group_count, kwargs)
    if pads is not None:
        return dense_conv(lhs, rhs, window_strides, pads, precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision,
                                    **kwargs)


def matmul_pads(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                 groups, kwargs):
    """The explicit paddings when the convolution goes to dense_conv, else None."""
    if (jax.default_backend() != 'cpu' or kwargs or groups != 1 or lhs.ndim != 4
            or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
            or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != NHWC):
        return None
    pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
            if isinstance(padding, str) else tuple(tuple(p) for p in padding))
    out = [(size + lo + hi - k) // s + 1
           for size, (lo, hi), k, s in zip(lhs.shape[1:3], pads, rhs.shape[:2], strides)]
    small = (min(out) > 0 and np.prod(out) <= MAX_OUTPUT_PIXELS and np.prod(rhs.shape[:2]) > 1
             and np.prod(lhs.shape[1:3]) <= MAX_INPUT_PIXELS)
    return pads if small else None


def dense_conv(x, kernel, strides, pads, precision=None):
    """2-D NHWC x HWIO convolution (explicit pads, no dilation) as one dot: the kernel
    spread into the dense (H*W*C, Ho*Wo*D) matrix that maps input to output pixels."""
    n, h, w, c = x.shape
    kh, kw, _, d = kernel.shape
    (sh, sw), ((top, bottom), (left, right)) = strides, pads
    ho, wo = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    # The kernel tap linking input pixel (i, j) to output pixel (p, q); kh * kw = none.
    i, j, p, q = np.meshgrid(np.arange(h), np.arange(w), np.arange(ho), np.arange(wo),
                             indexing='ij')
    ki, kj = i + top - p * sh, j + left - q * sw
    tap = np.where((ki >= 0) & (ki < kh) & (kj >= 0) & (kj < kw), ki * kw + kj, kh * kw)
    taps = jnp.concatenate([kernel.reshape(kh * kw, c, d), jnp.zeros((1, c, d), kernel.dtype)])
    matrix = taps[tap].transpose(0, 1, 4, 2, 3, 5).reshape(h * w * c, ho * wo * d)
    return jnp.dot(x.reshape(n, h * w * c), matrix, precision=precision).reshape(n, ho, wo, d)
