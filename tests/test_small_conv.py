"""models/small_conv.py: tiny-output convolutions as a matmul, against a numpy restatement.

A convolution (kernel above 1 x 1) whose output has at most 4 pixels (from at most 16) is computed on the CPU
as one dot with a dense matrix; it must equal the convolution restated in numpy, give
lax's gradients, leave every other convolution (and other backends) to lax bit for bit,
and leave a model's outputs as they were.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from unode_jax.models import create_model, small_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')
pytestmark = pytest.mark.cpu_only('the matmul form replaces XLA\'s convolution on the CPU only')


def numpy_conv(x, w, strides, pads):
    """out[n, p, q, d] = sum_{i, j, c} xpad[n, p*sh + i, q*sw + j, c] * w[i, j, c, d]."""
    (sh, sw), ((top, bottom), (left, right)) = strides, pads
    x = np.asarray(x, np.float64)
    x = np.pad(x, ((0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0)),
                   (0, 0)))
    x = x[:, max(-top, 0):x.shape[1] - max(-bottom, 0), max(-left, 0):x.shape[2] - max(-right, 0)]
    kh, kw = w.shape[:2]
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for p in range(ho):
        for q in range(wo):
            patch = x[:, p * sh:p * sh + kh, q * sw:q * sw + kw]
            out[:, p, q] = np.einsum('nijc,ijcd->nd', patch, np.asarray(w, np.float64))
    return out


# (input side, channels in, out, kernel, strides, padding): the ResNets' small-output convs.
SMALL = [
    (2, 8, 16, 3, (1, 1), ((1, 1), (1, 1))),     # layer4 of resnet18_cifar_w16 at 16 px
    (4, 8, 16, 3, (2, 2), ((1, 1), (1, 1))),     # its stride-2 first conv
    (2, 8, 16, 3, (1, 1), 'SAME'),
    (1, 8, 16, 3, (1, 1), ((1, 1), (1, 1))),     # 1 x 1 (resnet18's layer4 at 32 px)
    (3, 4, 8, 3, (2, 2), ((0, 1), (1, 0))),      # asymmetric pads
    (4, 4, 8, 3, (1, 1), ((-1, 0), (0, -1))),    # negative pads crop
]


def _random(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize('size, cin, cout, k, strides, padding', SMALL)
def test_small_output_conv_is_the_numpy_convolution(size, cin, cout, k, strides, padding):
    x, w = _random((3, size, size, cin), 0), _random((k, k, cin, cout), 1)
    pads = small_conv.matmul_pads(x, w, strides, padding, None, None,
                                   lax.conv_dimension_numbers(x.shape, w.shape, NHWC), 1, {})
    # Routed to the matmul, with the pads lax would use: explicit ones as given, 'SAME' on a
    # 2 x 2 input with a 3 x 3 kernel at stride 1 one a side. (numpy_conv below takes these
    # pads: a wrong conversion would go unseen by its comparison alone.)
    assert pads is not None
    assert [tuple(p) for p in pads] == list(((1, 1), (1, 1)) if padding == 'SAME' else padding)
    out = small_conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
    want = numpy_conv(x, w, strides, pads)
    assert out.shape == want.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size, cin, cout, k, strides, padding', SMALL[:3])
def test_small_output_conv_has_the_gradients_of_lax(size, cin, cout, k, strides, padding):
    x, w = _random((3, size, size, cin), 2), _random((k, k, cin, cout), 3)

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, strides, padding,
                                                 dimension_numbers=NHWC)))
    ours = jax.grad(loss(small_conv.conv_general_dilated), argnums=(0, 1))(x, w)
    want = jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, w)
    for a, b in zip(ours, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape, kwargs', [
    ((2, 4, 4, 8), {}),                                   # 16 output pixels
    ((2, 4, 4, 8), dict(window_strides=(2, 2), padding='VALID', kernel=1)),  # 1x1 kernel
    ((2, 8, 8, 8), dict(window_strides=(4, 4))),          # 4 outputs from 64 inputs
    ((2, 2, 2, 8), dict(rhs_dilation=(2, 2))),            # dilated
    ((2, 2, 2, 8), dict(feature_group_count=2)),          # grouped
])
def test_other_convolutions_are_lax_bit_for_bit(shape, kwargs):
    x, kwargs = _random(shape, 4), dict(kwargs)
    groups, k = kwargs.get('feature_group_count', 1), kwargs.pop('kernel', 3)
    w = _random((k, k, shape[-1] // groups, 8), 5)
    args = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=NHWC)
    args.update(kwargs)
    np.testing.assert_array_equal(small_conv.conv_general_dilated(x, w, **args),
                                  lax.conv_general_dilated(x, w, **args))


def test_other_backends_use_lax(monkeypatch):
    x, w = _random((2, 2, 2, 8), 6), _random((3, 3, 8, 8), 7)
    args = ((1, 1), ((1, 1), (1, 1)))
    assert small_conv.matmul_pads(x, w, *args, None, None, lax.conv_dimension_numbers(
        x.shape, w.shape, NHWC), 1, {}) is not None
    monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
    np.testing.assert_array_equal(
        small_conv.conv_general_dilated(x, w, *args, dimension_numbers=NHWC),
        lax.conv_general_dilated(x, w, *args, dimension_numbers=NHWC))


@pytest.mark.slow
def test_model_outputs_unchanged(monkeypatch):
    """The quick start's model at 16 px gives lax's outputs; its layer4's four 3x3 convs
    (2 x 2 outputs) are what goes to the matmul."""
    model = create_model('resnet18_cifar_w16', proj_dim=8)
    x = _random((4, 16, 16, 3), 8)
    variables = model.init(jax.random.key(0), x, train=False)
    calls = []
    dense = small_conv.dense_conv
    monkeypatch.setattr(small_conv, 'dense_conv', lambda *a: calls.append(a) or dense(*a))
    ours = model.apply(variables, x, train=False)
    assert len(calls) == 4
    monkeypatch.setattr(small_conv, 'MAX_OUTPUT_PIXELS', 0)  # Every conv to lax.
    want = model.apply(variables, x, train=False)
    assert len(calls) == 4
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
