"""torchvision ImageNet weights on our encoders, read without torch.

Fixtures (tests/fixtures/make_torchvision_fixtures.py): tiny torchvision-layout
ResNets saved by torch with their pooled features, and the key -> shape lists of
the real resnet18 and wide_resnet50_2 state dicts. Big models are only traced.
"""
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.tiny_config import tiny_config
from unode_jax.torch_io import weights as torch_weights
from unode_jax.training import devices as devices_lib, train as train_lib
from unode_jax.models import (FROZEN_PREFIXES, MODELS, BasicBlock, Bottleneck, ResNet, create_model,
                              normalize_input)
from unode_jax.models import torchvision as tv
from unode_jax.runtime.errors import ConfigError
from unode_jax.validate import validate_config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'torchvision')
# The fixtures' architectures as our ResNet (torchvision layout at small widths).
TINY = {
    'basic8': functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock,
                                num_filters=8),
    'wide4': functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=Bottleneck,
                               num_filters=4, width_per_group=128),
}


def fixture(name):
    return os.path.join(FIXTURES, name)


@pytest.fixture(scope='module')
def pth(tmp_path_factory):
    """Copies of the .pth fixtures: torch_weights caches beside the file it reads."""
    folder = tmp_path_factory.mktemp('torchvision')
    for name in ('basic8.pth', 'basic8_legacy.pth', 'wide4.pth'):
        shutil.copy(fixture(name), folder / name)
    return lambda name: str(folder / name)


@pytest.fixture(scope='module', autouse=True)
def tiny_models():
    with pytest.MonkeyPatch.context() as m:
        for name, ctor in TINY.items():
            m.setitem(MODELS, name, ctor)
        yield


def abstract_variables(name, size=32):
    model = create_model(name)
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))


def torch_shape(path, shape):
    return (shape[3], shape[2], shape[0], shape[1]) if path[-1] == 'kernel' else tuple(shape)


def assert_encoder_is(variables, state_dict):
    """Every encoder leaf equals its (transposed) state-dict entry."""
    for key, (collection, path, leaf) in tv.encoder_torch_keys(variables).items():
        want = state_dict[key]
        np.testing.assert_array_equal(
            np.asarray(leaf), want.transpose(2, 3, 1, 0) if path[-1] == 'kernel' else want,
            err_msg=key)


@pytest.mark.parametrize('name, file', [('basic8', 'basic8.pth'), ('basic8', 'basic8_legacy.pth'),
                                        ('wide4', 'wide4.pth')])
def test_features_match_torch(name, file, pth):
    expected = np.load(fixture('expected.npz'))
    x = normalize_input(expected['images'].astype(np.float32) / 255.0, 'imagenet')
    # The encoder alone needs no init: the file fills all of it.
    variables = tv.load_pretrained(abstract_variables(name), pth(file), name)
    encoder = {c: variables[c]['encoder'] for c in ('params', 'batch_stats')}
    feature = jax.jit(functools.partial(MODELS[name]().apply, train=False))(encoder, x)
    np.testing.assert_allclose(feature, expected[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', ['resnet18', 'wide_resnet50_2'])
def test_real_torchvision_keys_fill_our_encoders_exactly(name):
    with open(fixture('torchvision_keys.json')) as f:
        shapes = json.load(f)[name]
    variables = abstract_variables(name)
    targets = tv.encoder_torch_keys(variables)
    used = {k: tuple(s) for k, s in shapes.items() if not tv.IGNORED.fullmatch(k)}
    assert set(shapes) - set(used) == {'fc.weight', 'fc.bias'} | {
        k for k in shapes if k.endswith('.num_batches_tracked')}
    assert {k: torch_shape(path, leaf.shape) for k, (_, path, leaf) in targets.items()} == used
    # Through the loader, with zero-copy zeros: every encoder leaf becomes an array.
    state_dict = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    loaded = tv.load_torchvision_encoder(variables, state_dict, name)
    for c in ('params', 'batch_stats'):
        for got, ref in zip(jax.tree.leaves(loaded[c]['encoder']),
                            jax.tree.leaves(variables[c]['encoder']), strict=True):
            assert isinstance(got, np.ndarray) and got.shape == ref.shape
    assert loaded['params']['head'] is variables['params']['head']


def test_mismatched_files_say_what_they_look_like(pth):
    with open(fixture('torchvision_keys.json')) as f:
        shapes = json.load(f)['resnet18']
    state_dict = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    with pytest.raises(ValueError, match=r'model.pretrained=r18.pth looks like a resnet18 state '
                                         r'dict but model.name=resnet50: .*missing keys'):
        tv.load_torchvision_encoder(abstract_variables('resnet50'), state_dict, 'resnet50',
                                    source='r18.pth')
    variables = abstract_variables('resnet18')
    with pytest.raises(ValueError, match='unexpected keys .*layer5.0.conv1.weight'):
        tv.load_torchvision_encoder(variables, {**state_dict, 'layer5.0.conv1.weight': 0},
                                    'resnet18')
    with pytest.raises(ValueError, match=r"layout .* model.name='wrn28_10'"):
        tv.load_torchvision_encoder(variables, state_dict, 'wrn28_10')
    with pytest.raises(ValueError, match=r'basic blocks \(1, 1, 1, 1\).* model.name=wide4'):
        tv.load_pretrained(abstract_variables('wide4'), pth('basic8.pth'), 'wide4')


def pretrained_config(path, **kw):
    return tiny_config(**{'data.image_size': 32, 'model.name': 'basic8', 'model.pretrained': path,
                          'model.input_norm': 'imagenet', 'model.normalize_feature': True,
                          # one branch: a faster compile
                          'negatives.transforms': ('rotation',), **kw})


def test_validate_pretrained(pth):
    path = pth('basic8.pth')
    validate_config(pretrained_config(path))
    with pytest.raises(ConfigError, match='model.pretrained=.*nope.pth.*no such file'):
        validate_config(pretrained_config('nope.pth'))
    with pytest.raises(ConfigError, match=r'model.name \(with model.pretrained\)'):
        validate_config(pretrained_config(path, **{'model.name': 'wrn28_10'}))
    with pytest.warns(UserWarning, match="expect input_norm='imagenet'"):
        validate_config(pretrained_config(path, **{'model.input_norm': 'half'}))
    # ImageNet weights have the 7x7 stem: the CIFAR stem cannot take them, the upsampling
    # one can.
    with pytest.raises(ConfigError, match="model.stem='cifar' cannot load model.pretrained"):
        validate_config(pretrained_config(path, **{'model.name': 'resnet18',
                                                   'model.stem': 'cifar'}))
    validate_config(pretrained_config(path, **{'model.name': 'resnet18',
                                               'model.stem': 'imagenet_224'}))


PREFIXES = FROZEN_PREFIXES['resnet18']  # stem, layer1, layer2


@pytest.fixture(scope='module')
def pretrained_state(pth):
    """The authors' pretrained setting on the basic8 fixture: (config, fresh TrainState)."""
    config = pretrained_config(pth('basic8.pth'), **{'optim.freeze_prefixes': PREFIXES,
                                                     'optim.unfreeze_step': 100})
    return config, train_lib.create_train_state(jax.random.key(0), config, 32, train_lib.AXIS)


def test_create_train_state_loads_the_encoder_and_keeps_fresh_heads(pretrained_state):
    config, state = pretrained_state
    state_dict = torch_weights.load_state_dict(config.model.pretrained)
    assert_encoder_is({'params': state.params, 'batch_stats': state.batch_stats}, state_dict)
    # The heads are the init's: the same (cached, compiled) init without the file.
    init = train_lib.model_and_optimizer(config, 32, train_lib.AXIS)[2]
    fresh = init(jax.random.key(0), jnp.zeros((2, 32, 32, 3), jnp.float32))['params']
    assert not np.array_equal(fresh['encoder']['conv1']['kernel'],
                              state.params['encoder']['conv1']['kernel'])
    for head in ('proj_hidden', 'proj_out', 'head'):
        for a, b in zip(jax.tree.leaves(state.params[head]), jax.tree.leaves(fresh[head])):
            np.testing.assert_array_equal(a, b)
    assert config.model.pretrained in train_lib._PRETRAINED  # read once per process


@pytest.mark.slow
def test_frozen_layers_keep_their_weights_while_batch_stats_update(pretrained_state):
    config, state = pretrained_state
    images = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    devices = jax.local_devices()[:1]
    p_step = train_lib.make_p_train_step(config, devices)

    n = len(config.negatives.transforms)
    batch = devices_lib.replicate(train_lib.device_batch(
        images, np.ones(len(images), np.int32), np.full(n, 1 / n), images[:1],
        n_valid=len(images)), devices)
    new = devices_lib.replicate(state, devices)
    for _ in range(2):
        new, _ = p_step(new, batch)
    new = devices_lib.unreplicate(new)

    def leaves(tree):
        return {jax.tree_util.keystr(p): np.asarray(v)
                for p, v in jax.tree_util.tree_leaves_with_path(tree)}

    before, after = leaves(state.params), leaves(new.params)
    frozen = [k for k in before if k.startswith("['encoder']") and
              k.split("'")[3].startswith(PREFIXES)]
    assert len(frozen) == 18  # conv1, bn1 (2); layer1_0 (6); layer2_0 (6 + downsample 3)
    for k in before:
        if k in frozen:
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        else:
            assert not np.array_equal(after[k], before[k]), k
    stats_before, stats_after = leaves(state.batch_stats), leaves(new.batch_stats)
    for k in stats_before:  # the frozen layers' too
        assert not np.array_equal(stats_after[k], stats_before[k]), k
