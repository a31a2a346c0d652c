"""Configs load, negative weights resolve, and bad fields fail with one clear line."""
import glob
import importlib
import os
import re

import numpy as np
import pytest

from unode_jax.configs import default
from unode_jax import validate as V
from unode_jax.augment.weights import negative_weights
from unode_jax.data.registry import names
from unode_jax.runtime.errors import ConfigError
from unode_jax.validate import validate_config

# saved.py reads a trained workdir's config.json (tests/test_workdir_config.py).
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(os.path.dirname(__file__), '..', 'unode_jax', 'configs', '*.py'))
    if os.path.basename(p) not in ('__init__.py', 'saved.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_is_valid(name):
    config = importlib.import_module(f'unode_jax.configs.{name}').get_config()
    if config.data.name == 'arrays':
        config.data.path = 'mine.npz'
    if config.data.name in names('folder'):
        with pytest.raises(ConfigError, match='--config.data.path=DIR'):
            validate_config(config, num_devices=1)  # the root is the user's to give
        config.data.path = '/data/images'
    if config.optim.freeze_prefixes and not config.model.pretrained:
        # cifar10_pretrained.py: the file is the user's to give; frozen random layers warn.
        with pytest.warns(UserWarning, match='model.pretrained is not'):
            validate_config(config, num_devices=1)
    else:
        validate_config(config, num_devices=1)
    weights = negative_weights(config)
    if config.negatives.weights == 'auto':  # AutoAugOOD: computed per class from the data
        assert weights is None
    else:
        assert weights.sum() == pytest.approx(1.0)


def test_decay_epochs_follows_num_epochs():
    config = default.get_config()
    config.optim.num_epochs = 300
    assert config.optim.decay_epochs == 290  # paper: cosine over the epochs after warmup


def _weights(spec, dataset='cifar10'):
    config = default.get_config()
    config.negatives.transforms += ('elastic',)
    config.negatives.weights = spec
    config.data.name = dataset
    return dict(zip(config.negatives.transforms, negative_weights(config)))


def test_weight_sources():
    uniform = _weights('uniform')
    assert uniform['elastic'] == 0 and all(
        v == pytest.approx(1 / 8) for k, v in uniform.items() if k != 'elastic')
    authors = _weights('authors')
    assert authors['rotation'] == pytest.approx(0.1) and authors['mixup'] == pytest.approx(0.9)
    assert _weights('authors', 'svhn')['mixup'] == pytest.approx(0.7)  # their default row
    explicit = _weights('rotation=3,cutout=1')
    assert explicit['rotation'] == pytest.approx(0.75) and explicit['blur'] == 0
    for bad, match in [('rotation=1,nope=2', 'nope'), ('rotation=0', 'not all 0'),
                       ('rotation', 'name=w'), ('rotation=x', 'not a number')]:
        with pytest.raises(ValueError, match=match):
            _weights(bad)


@pytest.mark.parametrize('field, value, match', [
    ('data.name', 'nope', 'data.name'),
    ('model.name', 'vit', 'model.name'),
    ('loss.kind', 'infonce', 'loss.kind'),
    ('batch_size', 0, 'batch_size'),
    ('negatives.mixup_lam', (0.8, 0.2), 'mixup_lam'),
    ('score.crop_area', 0.0, 'crop_area'),
    ('autoaug.embedder', 'dino', 'autoaug.embedder'),
    ('autoaug.tsne', 'umap', 'autoaug.tsne'),
    ('autoaug.tau', 0.0, 'autoaug.tau'),
    ('autoaug.num_images', 5, 'autoaug.num_images'),
    ('autoaug.grid_size', 4, 'autoaug.grid_size'),
    ('corruptions.names', ('nope',), 'corruptions.names'),
    ('corruptions.source', 'imagecorruptions', 'corruptions.source'),
    ('data.setting', 'open_set', 'data.setting'),
    ('data.setting', 'unlabeled', 'data.outlier_sets'),
    ('score.labeled_term', 'binary', 'score.labeled_term'),
    ('predict.holdout', 0.9, 'predict.holdout'),
    ('predict.quantile', 1.0, 'predict.quantile'),
    ('corruptions.severity', 6, 'corruptions.severity'),
    ('model.stem', 'vit', 'model.stem'),
    ('model.name', 'wrn28_10', r'model.name \(with model.stem\)'),  # cifar10's stem: fixed
])
def test_bad_fields_name_themselves(field, value, match):
    config = importlib.import_module('configs.cifar10').get_config()
    section, _, key = field.rpartition('.')
    setattr(config[section] if section else config, key, value)
    with pytest.raises(ConfigError, match=match):
        validate_config(config)


def test_device_and_class_checks():
    config = default.get_config()
    config.batch_size = 6
    with pytest.raises(ConfigError, match='divisible by the 4'):
        validate_config(config, num_devices=4)
    config.batch_size = 8
    config.data.normal_class = 10
    with pytest.raises(ConfigError, match='classes 0..9'):
        validate_config(config, num_classes=10)
    config.data.normal_class = -1
    validate_config(config, num_classes=10, num_devices=4)
    assert negative_weights(config) is None  # 'auto' by default
    config.negatives.weights = 'uniform'
    assert np.isfinite(negative_weights(config)).all()


def test_stems_by_config():
    """32 px from scratch: the CIFAR stem; ImageNet weights and 224 px: torchvision's."""
    stem = {name: importlib.import_module(f'unode_jax.configs.{name}').get_config().model.stem
            for name in ('cifar10', 'svhn', 'mnist', 'cifar10_pretrained', 'mvtec', 'digits')}
    assert stem == {'cifar10': 'cifar', 'svhn': 'cifar', 'mnist': 'cifar',
                    'cifar10_pretrained': 'imagenet', 'mvtec': 'imagenet',
                    'digits': None}  # resnet18_cifar_w16: its own CIFAR stem


def test_unknown_override_names_the_field_and_the_nearest():
    from unode_jax.validate import unknown_override
    config = default.get_config()
    assert unknown_override(['launch.py', '--config.optim.peak_lr=2', '--mode=all'], config) is None
    assert unknown_override(['x', '--config.score.balanse=spread'], config).startswith(
        '--config.score.balanse: no such field in the config; nearest: score.balance, ')
    assert unknown_override(['x', '--config.zzz.qqq'], config) == (
        '--config.zzz.qqq: no such field in the config')
    # A field under a leaf is no field either.
    assert 'no such field' in unknown_override(['x', '--config.seed.x=1'], config)


def _field_doc(lines, field):
    """The comment of `config.<field> = ...` in default.py: its own line's and the block
    right above it."""
    assign = re.compile(r'\s*config\.' + re.escape(field) + r'\s*=')
    for i, line in enumerate(lines):
        if assign.match(line):
            text = [line.split('#', 1)[1] if '#' in line else '']
            j = i - 1
            while j >= 0 and lines[j].strip().startswith('#'):
                text.append(lines[j])
                j -= 1
            return ' '.join(text)
    raise AssertionError(f'configs/default.py sets no config.{field}')


def _undocumented(lines, field, allowed):
    """The allowed values the field's comment does not name ([] when it names the table)."""
    doc = _field_doc(lines, field)
    tables = [n for n, v in vars(V).items() if v is allowed and n.isupper()]
    if any(re.search(r'\b' + n + r'\b', doc) for n in tables):
        return []  # The comment points to the table.
    return [v for v in allowed if not re.search(r'(?<![\w.])' + re.escape(v) + r'(?!\w)', doc)]


def test_default_py_documents_every_allowed_value():
    """Allowed values are defined once, where implemented (validate.CHOICES reads them);
    default.py's comment of each enumerated field names every value, or the table."""
    with open(os.path.join(os.path.dirname(__file__), '..', 'unode_jax', 'configs', 'default.py')) as f:
        lines = f.read().splitlines()
    for field, allowed in {**V.CHOICES, **V.ENTRY_CHOICES, **V.OPTIONAL_CHOICES}.items():
        assert not _undocumented(lines, field, allowed), (
            f'configs/default.py: config.{field} does not mention '
            f'{_undocumented(lines, field, allowed)}')
    # The check bites: a value dropped from a comment, or a table not named, is found.
    dropped = [line.replace('| faces', '') for line in lines]
    assert _undocumented(dropped, 'data.name', V.CHOICES['data.name']) == ['faces']
    unnamed = [line.replace('ablation.VARIANT_NAMES', 'the variants') for line in lines]
    assert 'uniform' in _undocumented(unnamed, 'ablation.variants', V.VARIANT_NAMES)
    with pytest.raises(AssertionError, match='sets no config.data.nope'):
        _field_doc(lines, 'data.nope')


def test_paper_auroc_is_one_percent_per_class():
    config = importlib.import_module('configs.fashion_mnist_cpu').get_config()
    assert len(config.report.paper_auroc) == 10
    validate_config(config, num_classes=10)  # Fashion-MNIST's ten classes
    with pytest.raises(ConfigError, match='report.paper_auroc has 10 entries but '
                                          'fashion_mnist has 3 classes'):
        validate_config(config, num_classes=3)
    config.report.paper_auroc = (0.91,) * 9 + (100.5,)
    with pytest.raises(ConfigError, match=r'each in \[0, 100\]'):
        validate_config(config)
    config.report.paper_auroc = ()
    validate_config(config, num_classes=3)  # None: nothing to check


# What a CPU config may set for itself (issue 24's "one recipe"): the data, the image size,
# the batch and the budget, and how it is run and reported. Every method setting (loss and
# lambda, temperature, negatives and their weights, score and balance, optimiser and schedule
# shape) is the quick start's (configs/digits.py).
CPU_CONFIGS = ('faces', 'textures', 'fashion_mnist_cpu')
PER_DATASET = ('data.', 'batch_size', 'optim.num_epochs', 'optim.warmup_epochs',
               'optim.decay_epochs',  # A formula of num_epochs (configs/default.py).
               'log_every', 'checkpoint_every', 'score.batch_size', 'predict.holdout', 'report.')


def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


@pytest.mark.parametrize('name', CPU_CONFIGS)
def test_cpu_configs_share_one_recipe(name):
    recipe = _flat(importlib.import_module('configs.digits').get_config().to_dict())
    config = _flat(importlib.import_module(f'unode_jax.configs.{name}').get_config().to_dict())
    assert set(config) == set(recipe)
    differ = sorted(k for k in config if config[k] != recipe[k])
    assert differ, f'configs/{name}.py is configs/digits.py'
    assert [k for k in differ if not k.startswith(PER_DATASET)] == [], (
        f'configs/{name}.py sets method fields of its own: one recipe for every CPU config')
