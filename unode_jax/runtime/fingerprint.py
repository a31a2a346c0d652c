"""What a trained model is bound to, so that a workdir never mixes two configurations.

A model is bound to its training fields, every config field but those that only
evaluation reads (EVAL_FIELDS) or that only say how a run is carried out (RUN_FIELDS),
and to its training images: their count and a SHA-256 of their bytes (with the labels
of a labeled run). The two make a model's record, saved in every checkpoint's metadata
and checked when a run resumes or restores it; the whole config is in config.json,
compared field by field before a run does any work; a results.json carries the key of
the fields (training and evaluation) and images it was computed with, and is reused
only under the same key. A mismatch is one ConfigError naming each differing field with
both values and the ways out. Every field not listed here is a training field, so a new
field is guarded until it is listed.

A field the saved record does not hold (added to the config after that model was
trained) is not compared, nor one the config no longer has.
"""
import hashlib
import json

import numpy as np

from unode_jax.runtime.errors import ConfigError

# Fields that evaluation, prediction and reports read and training does not: they may
# change on a trained model (--mode=eval, Detector.load). A name ending in '.' is a
# section. predict.holdout is not one: it decides which images the model trains on.
EVAL_FIELDS = ('score.', 'predict.quantile', 'corruptions.', 'report.')
# Fields that say where data lives and how a run is carried out (logging, checkpoints,
# progress, caches, device memory), not what is trained: the same images and draws.
# Where the images come from (data.path, ...) is checked through the images themselves.
RUN_FIELDS = ('progress_bar', 'tensorboard', 'deterministic', 'log_every',
              'checkpoint_every', 'keep_checkpoints', 'data.data_dir', 'data.cache_dir',
              'data.cache', 'data.download', 'data.path', 'data.strict',
              'data.device_budget_mb', 'autoaug.download', 'autoaug.cache_dir',
              'autoaug.batch_size', 'ablation.')
# What a rerun with more epochs would need to know.
_NOTES = {'optim.num_epochs': 'the learning-rate schedule spans optim.num_epochs, so a '
                              'longer or shorter run is a new run'}


def _matches(name, fields):
    return any(name == f or (f.endswith('.') and name.startswith(f)) for f in fields)


def is_training_field(name):
    """Whether the dotted field name changes what is trained."""
    return not _matches(name, EVAL_FIELDS + RUN_FIELDS)


def _listed(fields):
    return ', '.join(f[:-1] + '.*' if f.endswith('.') else f for f in fields)


def not_trained_fields():
    """The fields a trained model's config may change, as a message lists them."""
    return f'{_listed(EVAL_FIELDS)}, and how a run is carried out: {_listed(RUN_FIELDS)}'


def flat_fields(config):
    """{dotted name: JSON value} of a ConfigDict or of the dict config.json holds."""
    tree = config if isinstance(config, dict) else json.loads(config.to_json_best_effort())
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f'{prefix}{key}.')
            else:
                out[prefix + key] = value
    walk(tree, '')
    return out


def training_fields(config):
    return {k: v for k, v in flat_fields(config).items() if is_training_field(k)}


def images_record(x, labels=None):
    """{'count', 'sha256'} of uint8 images (N, H, W, C), their shape and bytes, and labels."""
    h = hashlib.sha256(repr((tuple(np.shape(x)), str(np.asarray(x).dtype))).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(np.asarray(labels, np.int64)).tobytes())
    return dict(count=int(len(x)), sha256=h.hexdigest())


def training_record(config, x, labels=None):
    """What a checkpoint saves of what its model was trained on."""
    return dict(fields=training_fields(config), images=images_record(x, labels))


def results_key(config, images):
    """The key of a results.json: every field but RUN_FIELDS, and the training images'
    record (images_record)."""
    fields = {k: v for k, v in flat_fields(config).items() if not _matches(k, RUN_FIELDS)}
    text = json.dumps(dict(fields=fields, images=images), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def bank_fields(config):
    """The evaluation fields a bank.npz (its embeddings, lambda, BatchNorm statistics,
    held-out scores) is computed with: score.* but the batch size and the baselines."""
    return {k: v for k, v in flat_fields(config).items() if k.startswith('score.')
            and k not in ('score.batch_size', 'score.baselines')}


def differences(saved, fields):
    """[(name, saved value, value now)] of the fields both hold, in name order."""
    return [(k, saved[k], fields[k]) for k in sorted(saved.keys() & fields.keys())
            if saved[k] != fields[k]]


def ways_out():
    return ('train in a new workdir, or score the saved model with --mode=eval without '
            f'--config (or Detector.load), where evaluation fields ({_listed(EVAL_FIELDS)}) '
            'may change')


def _named(diffs):
    named = ', '.join(f'{k} ({a!r} saved, {b!r} now)' for k, a, b in diffs)
    return named + ''.join(f' ({_NOTES[k]})' for k, _, _ in diffs if k in _NOTES)


def check_fields(saved, fields, where):
    """ConfigError naming every training field whose value differs from the saved one."""
    diffs = [d for d in differences(saved, fields) if is_training_field(d[0])]
    if diffs:
        raise ConfigError(f'{where} holds a model trained with other settings: '
                          f'{_named(diffs)}: {ways_out()}')


def check_bank(saved, config, where):
    """ConfigError when a bank.npz was computed with other bank_fields than config's (a
    bank written before it recorded them, saved None, is not compared)."""
    diffs = differences(saved or {}, bank_fields(config))
    if diffs:
        raise ConfigError(f'{where} was computed with other evaluation settings: '
                          f'{_named(diffs)}: rerun --mode=eval with these settings to write '
                          'it again, or score with the saved ones')


def check_images(saved, images, where):
    """ConfigError when the saved images record is not that of the images now."""
    if saved == images:
        return
    raise ConfigError(
        f'{where} holds a model trained on other images ({saved.get("count")} images, '
        f'sha256 {str(saved.get("sha256"))[:12]}... saved; {images["count"]} images, sha256 '
        f'{images["sha256"][:12]}... now): train on these in a new workdir')


def check_record(saved, record, where, required=True):
    """A checkpoint's saved record against this run's (training_record); a checkpoint
    without one (written before records were kept) is refused when `required`."""
    if saved is None:
        if required:
            raise ConfigError(f'{where} was written without a record of what its model was '
                              'trained on (an earlier version): it cannot be trained further; '
                              'train in a new workdir, or score it as it is with --mode=eval')
        return
    check_fields(saved.get('fields', {}), record['fields'], where)
    if record.get('images') is not None:
        check_images(saved.get('images', {}), record['images'], where)
