"""Model tests: parameter counts, shapes, torch padding, BatchNorm, freezing.

Big models are only traced (jax.eval_shape); only tiny models are run.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unode_jax.models import (FROZEN_PREFIXES, MODELS, BasicBlock, ResNet,
                              create_model, frozen_mask)
from unode_jax.models import resnet


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_vars(module, size, **kw):
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    return jax.eval_shape(
        functools.partial(module.init, train=False, **kw), jax.random.key(0), x)


def _path_names(path):
    return tuple(str(getattr(k, 'key', k)) for k in path)


# ---------------------------------------------------------------- counts ---

@pytest.mark.parametrize('name, expected', [
    ('wrn28_10', 36_472_784),         # WRN-28-10 without fc.
    ('wide_resnet50_2', 66_834_240),  # torchvision wide_resnet50_2 minus fc.
    ('resnet18', 11_176_512),         # torchvision resnet18 minus fc.
    ('resnet18_cifar', 11_168_832),   # 3x3 stem: 7680 fewer stem weights.
    # A quarter of the width: conv weights 432 in the 3-channel stem + 1/16 of
    # resnet18_cifar's other 11,157,504 = 697,776; BatchNorm 1/4 of its 9,600 = 2,400.
    ('resnet18_cifar_w16', 700_176),
    ('resnet50', 23_508_032),         # torchvision resnet50 minus fc.
])
def test_encoder_param_counts(name, expected):
    variables = _abstract_vars(MODELS[name](), 32)
    assert _count(variables['params']) == expected


def test_wrn28_10_with_10_way_fc_param_count():
    params = _abstract_vars(create_model('wrn28_10', num_classes=10), 32)['params']
    assert _count({k: params[k] for k in ('encoder', 'head')}) == 36_479_194


# ---------------------------------------------------------------- shapes ---

FEATURE_DIMS = {'resnet18_cifar': 512, 'resnet18_cifar_w16': 128, 'resnet18': 512,
                'resnet50': 2048,
                'wide_resnet50_2': 2048, 'wrn28_10': 640, 'tiny': 16}


def test_every_model_has_a_feature_dim():
    assert set(FEATURE_DIMS) == set(MODELS)


@pytest.mark.parametrize('name, size', [(n, 32) for n in FEATURE_DIMS] + [
    ('resnet18', 64), ('resnet50', 64), ('wide_resnet50_2', 64)])
def test_output_shapes(name, size):
    model = create_model(name, proj_dim=128, num_classes=3)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    out, variables = jax.eval_shape(
        functools.partial(model.init_with_output, train=False),
        jax.random.key(0), x)
    d = FEATURE_DIMS[name]
    assert out['feature'].shape == (2, d)
    assert out['z'].shape == (2, 128)
    assert out['logits'].shape == (2, 3)
    params = variables['params']
    assert set(params) == {'encoder', 'proj_hidden', 'proj_out', 'head'}
    assert params['proj_hidden']['kernel'].shape == (d, d)


def test_bf16_compute_gives_float32_outputs():
    model = create_model('tiny', dtype=jnp.bfloat16)
    out, variables = jax.eval_shape(
        functools.partial(model.init_with_output, train=False),
        jax.random.key(0), jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert all(v.dtype == jnp.float32 for v in out.values())
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_a_cpu():
    from unode_jax.models import compute_dtype
    assert compute_dtype('auto') == jnp.float32  # this machine: a CPU
    for backend in ('gpu', 'cuda', 'rocm', 'tpu'):
        assert compute_dtype('auto', backend) == jnp.bfloat16
    assert compute_dtype('auto', 'cpu') == jnp.float32
    assert compute_dtype('float32', 'tpu') == jnp.float32  # explicit wins
    assert compute_dtype('bfloat16', 'cpu') == jnp.bfloat16
    with pytest.raises(ValueError, match='model.dtype must be one of'):
        compute_dtype('float16')


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match='resnet18_cifar'):
        create_model('resnet1000')


def test_torchvision_parameter_names():
    params = _abstract_vars(MODELS['resnet50'](), 32)['params']
    assert {'conv1', 'bn1', 'layer1_0', 'layer4_2'} <= set(params)
    assert 'layer4_3' not in params
    assert set(params['layer1_0']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3',
                                       'bn3', 'downsample_conv', 'downsample_bn'}
    assert 'downsample_conv' not in params['layer1_1']
    # v1.5: the stride sits on the 3x3 conv; wide_resnet50_2 doubles its width.
    assert params['layer2_0']['conv2']['kernel'].shape == (3, 3, 128, 128)
    wide = _abstract_vars(MODELS['wide_resnet50_2'](), 32)['params']
    assert wide['layer2_0']['conv2']['kernel'].shape == (3, 3, 256, 256)
    assert wide['layer2_0']['conv3']['kernel'].shape == (1, 1, 256, 512)
    wrn = _abstract_vars(MODELS['wrn28_10'](), 32)['params']
    assert {'conv1', 'layer3_3', 'bn_final'} <= set(wrn)
    assert 'shortcut_conv' in wrn['layer1_0']
    assert 'shortcut_conv' not in wrn['layer1_1']


# ----------------------------------------------------------- torch stem ---

def _torch_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


@pytest.mark.parametrize('size', [224, 223, 65, 64, 33])
def test_stem_conv_and_pool_match_torch_sizes(size):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    conv = nn.Conv(4, (7, 7), (2, 2), padding=resnet.PAD3)
    y = jax.eval_shape(lambda x: conv.init_with_output(jax.random.key(0), x)[0],
                       x)
    assert y.shape[1:3] == (_torch_out(size, 7, 2, 3),) * 2
    z = jax.eval_shape(resnet.torch_max_pool, y)
    assert z.shape[1:3] == (_torch_out(y.shape[1], 3, 2, 1),) * 2


def test_resnet18_spatial_sizes_224():
    model = MODELS['resnet18']()
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda k, x: model.init_with_output(k, x, train=False,
                                            capture_intermediates=True),
        jax.random.key(0), x)
    inter = state['intermediates']
    sizes = {name: inter[name]['__call__'][0].shape[1]
             for name in ('conv1', 'layer1_0', 'layer2_0', 'layer3_0',
                          'layer4_1')}
    # 224 -conv-> 112 -pool-> 56 (layer1 keeps it) -> 28 -> 14 -> 7.
    assert sizes == {'conv1': 112, 'layer1_0': 56, 'layer2_0': 28,
                     'layer3_0': 14, 'layer4_1': 7}


def _spatial_sizes(model, size, names=('conv1', 'layer1_0', 'layer4_2')):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda k, x: model.init_with_output(k, x, train=False, capture_intermediates=True),
        jax.random.key(0), x)
    return {n: state['intermediates'][n]['__call__'][0].shape[1] for n in names}


@pytest.mark.parametrize('stem, sizes, kernel', [
    # CIFAR stem: 32 px stays 32 x 32 into layer1, 4 x 4 in layer4.
    ('cifar', {'conv1': 32, 'layer1_0': 32, 'layer4_2': 4}, 3),
    # torchvision's: 16 after the 7x7/2 conv, 8 after the pool, 1 x 1 in layer4.
    ('imagenet', {'conv1': 16, 'layer1_0': 8, 'layer4_2': 1}, 7),
    # Upsampled to 224 first: ImageNet's 112 / 56 / 7.
    ('imagenet_224', {'conv1': 112, 'layer1_0': 56, 'layer4_2': 7}, 7),
])
def test_wide_resnet50_2_stems_at_32px(stem, sizes, kernel):
    encoder = create_model('wide_resnet50_2', stem=stem).encoder
    assert _spatial_sizes(encoder, 32) == sizes
    params = _abstract_vars(encoder, 32)['params']
    assert params['conv1']['kernel'].shape == (kernel, kernel, 3, 64)
    assert 'layer1_0' in params and 'fc' not in params


def test_imagenet_224_stem_is_imagenet_on_the_upsampled_image():
    """Same parameters as the imagenet stem, applied to the bilinearly resized input."""
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    up = create_model('tiny', stem='imagenet_224')
    plain = create_model('tiny', stem='imagenet')
    variables = plain.init(jax.random.key(0), x[:1], train=False)
    expected = plain.apply(variables, jax.image.resize(x, (2, 224, 224, 3), 'bilinear'),
                           train=False)
    got = up.apply(variables, x, train=False)
    np.testing.assert_allclose(got['feature'], expected['feature'], rtol=1e-5, atol=1e-6)
    # At 224 px already, nothing is resized.
    x224 = jax.random.uniform(jax.random.key(2), (1, 224, 224, 3))
    np.testing.assert_array_equal(up.apply(variables, x224, train=False)['feature'],
                                  plain.apply(variables, x224, train=False)['feature'])


def test_stem_only_for_resnets_and_named():
    with pytest.raises(ValueError, match='fixed stem'):
        create_model('wrn28_10', stem='cifar')
    with pytest.raises(ValueError, match='stem must be one of'):
        create_model('resnet18', stem='vit')
    # None keeps each model's own: resnet18_cifar 3x3, resnet18 7x7.
    own = {name: _abstract_vars(create_model(name).encoder, 32)['params']['conv1']['kernel'].shape[0]
           for name in ('resnet18_cifar', 'resnet18')}
    assert own == {'resnet18_cifar': 3, 'resnet18': 7}


def test_stem_conv_alignment_matches_torch():
    """Centre-tap kernel: torch's pad 3 samples x[2i]; 'SAME' would not."""
    model = ResNet(stage_sizes=(1,), block_cls=BasicBlock, num_filters=4)
    x = jnp.arange(16 * 16, dtype=jnp.float32).reshape(1, 16, 16, 1)
    abstract = jax.eval_shape(functools.partial(model.init, train=False),
                              jax.random.key(0), x)
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
    variables['params']['conv1']['kernel'] = (
        jnp.zeros((7, 7, 1, 4)).at[3, 3].set(1.0))
    _, state = model.apply(variables, x, train=False,
                           capture_intermediates=True)
    conv_out = state['intermediates']['conv1']['__call__'][0]
    np.testing.assert_array_equal(conv_out[0, :, :, 0], x[0, ::2, ::2, 0])


def test_max_pool_matches_torch_alignment_and_pads_with_minus_inf():
    ramp = jnp.arange(8, dtype=jnp.float32)[None, :, None, None] * jnp.ones(
        (1, 8, 8, 1))
    # torch: out[j] = max(x[2j-1 .. 2j+1]) = x[2j+1] on an increasing ramp.
    np.testing.assert_array_equal(
        resnet.torch_max_pool(ramp)[0, :, 0, 0], [1.0, 3.0, 5.0, 7.0])
    # Zero padding would leak 0 into the border of an all-negative map.
    neg = -jnp.ones((1, 8, 8, 2))
    np.testing.assert_array_equal(resnet.torch_max_pool(neg), -1.0)


# ---------------------------------------------------- real tiny model ---

@pytest.fixture(scope='module')
def tiny():
    model = create_model('tiny')
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0), x)
    return model, variables, x


def test_tiny_train_updates_batch_stats_eval_does_not(tiny):
    model, variables, x = tiny
    out, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
    assert out['feature'].shape == (8, 16)
    assert all(np.isfinite(v).all() for v in out.values())
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                           variables['batch_stats'], state['batch_stats'])
    assert all(jax.tree.leaves(changed))

    out_eval, state_eval = model.apply(variables, x, train=False,
                                       mutable=['batch_stats'])
    jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'],
                 state_eval['batch_stats'])
    # Eval needs no mutable collection.
    out_plain = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(out_plain['logits'], out_eval['logits'])


def test_normalize_feature_gives_unit_norm(tiny):
    model, variables, x = tiny
    normed = model.clone(normalize_feature=True)  # Same parameter tree.
    out = normed.apply(variables, x, train=False)
    np.testing.assert_allclose(np.linalg.norm(out['feature'], axis=-1), 1.0,
                               rtol=1e-5)


@pytest.mark.devices(4)
def test_pmap_batchnorm_syncs_statistics(tiny):
    n_dev = 4
    assert jax.local_device_count() >= n_dev, 'conftest should set XLA_FLAGS'
    model, variables, x = tiny
    synced = create_model('tiny', bn_axis_name='batch')

    ref_out, ref_state = model.apply(variables, x, train=True,
                                     mutable=['batch_stats'])

    replicated = jax.tree.map(lambda a: jnp.stack([a] * n_dev), variables)
    shards = x.reshape(n_dev, -1, *x.shape[1:])
    step = jax.pmap(
        functools.partial(synced.apply, train=True, mutable=['batch_stats']),
        axis_name='batch', devices=jax.local_devices()[:n_dev])
    out, state = step(replicated, shards)

    for i in range(n_dev):
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5),
            jax.tree.map(lambda a: a[i], state['batch_stats']),
            ref_state['batch_stats'])
    np.testing.assert_allclose(out['feature'].reshape(ref_out['feature'].shape),
                               ref_out['feature'], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- freezing ---

def test_frozen_mask_marks_stem_layer1_layer2():
    variables = _abstract_vars(create_model('resnet18'), 32)
    prefixes = FROZEN_PREFIXES['resnet18']
    for tree in (variables['params'], variables):  # With/without 'params'.
        mask = frozen_mask(tree, prefixes)
        assert jax.tree.structure(mask) == jax.tree.structure(tree)

    params = variables['params']
    mask = frozen_mask(params, prefixes)
    flat = {_path_names(p): m
            for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    frozen = {p for p, m in flat.items() if m}
    expected = {p for p in flat if p[0] == 'encoder' and (
        p[1] in ('conv1', 'bn1') or p[1].startswith(('layer1_', 'layer2_')))}
    assert frozen == expected
    assert ('encoder', 'conv1', 'kernel') in frozen
    assert ('encoder', 'layer2_1', 'bn2', 'bias') in frozen
    assert ('encoder', 'layer3_0', 'conv1', 'kernel') not in frozen
    assert not any(p[0] in ('proj_hidden', 'proj_out', 'head') for p in frozen)

    # Stem 9408+128, layer1 2*73,984, layer2 230,144+295,424.
    frozen_count = sum(
        int(np.prod(leaf.shape)) for leaf, m in zip(
            jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
    assert frozen_count == 683_072


def test_frozen_prefixes_cover_every_model():
    assert set(FROZEN_PREFIXES) == set(MODELS)
    assert not any(jax.tree.leaves(frozen_mask(
        _abstract_vars(create_model('wrn28_10'), 32), FROZEN_PREFIXES['wrn28_10'])))
