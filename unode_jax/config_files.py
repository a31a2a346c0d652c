"""Config files as code: get_config() of a config file (a path, or a packaged config by name:
`digits` is unode_jax/configs/digits.py), dotted-name overrides, and the config a trained
workdir saved (configs/saved.py), for the command line and the Python API."""
import importlib.util
import os
import sys

from ml_collections import config_dict

from unode_jax.runtime import fingerprint
from unode_jax.runtime.errors import ConfigError

PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
SAVED_CONFIG = os.path.join(PACKAGED, 'saved.py')


def packaged_configs():
    """The names of the packaged configs (digits, cifar10, ...), sorted."""
    return sorted(f[:-3] for f in os.listdir(PACKAGED)
                  if f.endswith('.py') and not f.startswith('_'))


def config_path(name):
    """The file of a config: name itself where it is a file, else the packaged config of that
    bare name (`digits` or `digits.py`); anything else is a ConfigError listing them."""
    if os.path.isfile(name):
        return name
    stem = name[:-3] if name.endswith('.py') else name
    if os.sep not in stem and '/' not in stem and stem in packaged_configs():
        return os.path.join(PACKAGED, stem + '.py')
    raise ConfigError(f'no such file or packaged config ({", ".join(packaged_configs())}; '
                      'configs/NAME.py in the repository)')


def load_module(path):
    """The Python file at path as a module, with the folder above its own importable so
    that a config beside its own package's configs (`from myconfigs import base`) works from
    any working directory; the packaged configs import `unode_jax.configs`."""
    try:
        path = config_path(path)
    except ConfigError as e:
        raise ConfigError(f'config {path}: {e}') from None
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        spec = importlib.util.spec_from_file_location('unode_config_file', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if added:
            sys.path.remove(root)


def load_config_file(path, arg=None):
    """get_config() (or get_config(arg)) of a config file; `path:arg` as launch.py's
    --config writes it."""
    if arg is None and ':' in path and not os.path.isfile(path) and not _is_config(path):
        path, arg = path.split(':', 1)
    module = load_module(path)
    return module.get_config(arg) if arg else module.get_config()


def _is_config(name):
    try:
        return bool(config_path(name))
    except ConfigError:
        return False


def with_overrides(config, overrides):
    """config with dotted-name overrides ({'optim.num_epochs': 10}); a name that is no
    field, or a value of the wrong type, is a ConfigError naming it."""
    for name, value in overrides.items():
        *parents, leaf = name.split('.')
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, config_dict.ConfigDict) else None
        if not isinstance(node, config_dict.ConfigDict) or leaf not in node:
            raise ConfigError(f'override {name}: no such config field')
        try:
            setattr(node, leaf, value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f'override {name}={value!r}: {e}') from None
    return config


def refuse_training_fields(names, workdir, flag=''):
    """ConfigError for the first override that names a training field: a trained workdir's
    config may change only the fields training does not read (runtime/fingerprint.py)."""
    for name in names:
        if fingerprint.is_training_field(name):
            raise ConfigError(f'{flag}{name}: {workdir} was trained with its own value of this '
                              'field; only fields that training does not read can change '
                              f'without retraining ({fingerprint.not_trained_fields()})')


def saved_config(workdir, overrides=()):
    """The config a trained workdir (or a sweep's class_<c>/) was trained with; an override
    of a field that training read is a ConfigError (refuse_training_fields)."""
    saved = load_module(SAVED_CONFIG)
    refuse_training_fields(overrides, workdir)
    try:
        return saved.get_config(workdir)
    except FileNotFoundError as e:
        raise ConfigError(str(e).replace('; pass --config=configs/NAME.py', '')) from None
