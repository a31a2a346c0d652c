"""The config a trained workdir was trained with, read back from its config.json.

  python launch.py --workdir=runs/digits/class_1 --mode=predict --images=new/
  python launch.py --workdir=runs/digits/class_1 --mode=eval --config.score.ensemble=10
  python launch.py --config=configs/saved.py:runs/digits --workdir=runs/digits --mode=eval

launch.py uses this file when --config is not given. A class folder of a sweep
(class_<c>/) has its own config.json (normal_class = c); one trained before it had
one takes its sweep's, with normal_class = c. Overrides of the fields that training
does not read (unode_jax/runtime/fingerprint.py: EVAL_FIELDS, RUN_FIELDS) are allowed;
any other override would describe a model that was not trained, and launch.py refuses
it in one line.
"""
import json
import os
import re

from ml_collections import config_dict

from unode_jax.configs import default

CONFIG_FILE = 'config.json'


def saved_config_path(workdir):
    """(config.json to read, normal class to set or None) for a workdir; (None, None)
    when it has none."""
    own = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(own):
        return own, None
    name = os.path.basename(os.path.normpath(workdir))
    sweep = os.path.join(os.path.dirname(os.path.normpath(workdir)), CONFIG_FILE)
    match = re.fullmatch(r'class_(\d+)', name)
    if match and os.path.isfile(sweep):
        return sweep, int(match.group(1))
    return None, None


def _merge(config, saved):
    """config's fields set to saved's values, keeping their types (JSON lists -> tuples)."""
    for key, value in saved.items():
        if key not in config:
            with config.unlocked():
                config[key] = value
        elif isinstance(config[key], config_dict.ConfigDict):
            _merge(config[key], value)
        elif isinstance(config[key], tuple) and isinstance(value, list):
            config[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            config[key] = value


def get_config(workdir):
    path, normal_class = saved_config_path(workdir)
    if path is None:
        raise FileNotFoundError(f'no {CONFIG_FILE} in {workdir} (or its sweep folder): not a '
                                'trained workdir; pass --config=configs/NAME.py')
    with open(path, encoding='utf-8') as f:
        saved = json.load(f)
    config = default.get_config()
    _merge(config, saved)
    if normal_class is not None:
        config.data.normal_class = normal_class
    return config
