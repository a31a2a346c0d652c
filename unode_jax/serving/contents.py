"""What every export of a trained model holds, whatever its format (export.py: jax.export;
onnx_export.py: ONNX): the checks that the model can be exported as the config scores it,
the scoring function of the network and the bank, the arrays it closes over, model.json's
metadata with the reference images and the trained model's scores of them (reference.py),
and the folder written through a temporary one.
"""
import hashlib
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from unode_jax.evaluation import copies, score
from unode_jax.evaluation.evaluate import forward
from unode_jax.models import compute_dtype
from unode_jax.runtime.errors import ConfigError
from unode_jax.serving import reference
from unode_jax.training.losses import l2_normalize

FORMAT = 3  # model.json's 'format' (3: with the reference; 2: the function returns logits).
# Every file an export folder may hold: an existing folder is replaced only if it holds
# nothing else.
EXPORT_FILES = ('model.jax', 'arrays.npz', 'model.json', 'model.onnx')


def score_function(apply_fn, config, balance):
    """f(variables, bank, images) -> dict(sim, logits): eq. (13)'s similarity on the scale
    score.unode_scores gives it for `balance` (the mean of the score.knn_k largest cosines),
    and the head's logits, float32; with rotation copies (score.copies) also copy_sim
    (C, N) and copy_logits (C, N, classes), each turn against the bank's turned copies."""
    input_norm, features = config.model.input_norm, config.score.features
    k = int(config.score.knn_k)
    turns = [c.turn for c in copies.copy_list(config.score.copies)]

    def nearest(z, bank_z):
        cos = jnp.matmul(l2_normalize(z), bank_z.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.max(cos, axis=1) if k == 1 else jax.lax.top_k(cos, k)[0].mean(axis=1)

    def f(variables, bank, images):
        x = images.astype(jnp.float32) / 255.0
        z, logits = forward(apply_fn, variables, x, input_norm, features)
        sim = nearest(z, bank['z'])
        norm = jnp.linalg.norm(z, axis=1)
        if balance == 'appendix_c_norm':  # as score.unode_scores
            sim = sim * norm
        if balance == 'authors':
            sim = sim * norm / bank['mean_norm']
        out = dict(sim=sim, logits=logits.astype(jnp.float32))
        if turns:
            got = [forward(apply_fn, variables, jnp.rot90(x, k=t, axes=(1, 2)), input_norm,
                           features) for t in turns]
            out['copy_sim'] = stack([nearest(zc, bz) for (zc, _), bz in
                                     zip(got, bank['copy_z'])])
            out['copy_logits'] = stack([lc.astype(jnp.float32) for _, lc in got])
        return out
    return f


def stack(arrays):
    """jnp.stack as a concatenate: jax 0.10's own stack primitive has no ONNX rule in
    jax2onnx 0.12.5; the values are the same."""
    return jnp.concatenate([a[None] for a in arrays])


def check_exportable(model, config, path):
    """ConfigError, one line, for what an export cannot score as the config says, or a
    target folder that holds something else than an export."""
    if config.score.ensemble != 1:
        raise ConfigError(f'export scores with one view of each image: pass '
                          f'--config.score.ensemble=1 (got {config.score.ensemble})')
    if any(t != 'rotation' for t in config.score.copies):
        raise ConfigError(f'export takes the rotation copies alone (their draws are not '
                          f'random): pass --config.score.copies="(\'rotation\',)" or "()" '
                          f'(got {tuple(config.score.copies)})')
    if model.bank.get('knn_k', 1) != config.score.knn_k or bool(model.bank.get('copies')) != \
            bool(config.score.copies):
        raise ConfigError('export: the model\'s bank was scored with other score.knn_k or '
                          'score.copies than the config: rerun --mode=eval first')
    if model.head not in score.HEAD_TERMS or model.balance not in score.BALANCES:
        raise ConfigError(f'export: unknown head {model.head!r} or balance {model.balance!r}')
    if os.path.exists(path) and not (os.path.isdir(path) and
                                     set(os.listdir(path)) <= set(EXPORT_FILES)):
        raise ConfigError(f'--out={path} exists and is not an export: pick a new folder')


def variables_and_bank(model):
    """(the network's variables, the bank the function compares with: unit-norm z, the
    mean norm of the raw z, with copies the unit-norm copy_z), as numpy arrays."""
    z = np.asarray(model.bank['z'], np.float32)
    bank = dict(z=np.asarray(l2_normalize(jnp.asarray(z))),
                mean_norm=np.float32(np.mean(np.linalg.norm(z.astype(np.float64), axis=1))))
    made = model.bank.get('copies')
    if made:
        bank['copy_z'] = np.asarray(l2_normalize(jnp.asarray(made['z'], jnp.float32)))
    variables = dict(params=model.state.params, batch_stats=model.state.batch_stats)
    return jax.device_get(variables), bank


def config_sha256(config):
    return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()


def metadata(model, config, **extra):
    """model.json: what the export expects and how its outputs make eq. (15), `extra`, and
    last the reference images with the trained model's float64 scores of them (computed
    with the trained model, as predict scores, not with the exported function)."""
    made = model.bank.get('copies')
    size = config.data.image_size
    expects = dict(image_size=size, dtype='uint8', float_range=[0, 1], channels=[1, 3],
                   resize=config.data.resize, layout='(N, H, W) or (N, H, W, C), any H and W')
    images = reference.reference_images(model.x_fit, size)
    info = dict(format=FORMAT, input=expects,
                score='higher = more normal; novel where score < threshold',
                threshold=None if np.isnan(model.threshold) else model.threshold,
                quantile=model.quantile,
                holdout_scores=[float(v) for v in np.asarray(model.holdout_scores, np.float64)],
                weight=float(model.weight),
                head=model.head, balance=model.balance, step=model.step,
                knn_k=int(config.score.knn_k),
                copies=None if not made else dict(
                    transforms=list(config.score.copies),
                    weight=[float(v) for v in made['weight']],
                    label=[int(v) for v in made['label']]),
                config_sha256=config_sha256(config), model=config.model.name,
                compute_dtype=compute_dtype(config.model.dtype).name, **extra)
    with jax.default_matmul_precision(reference.PRECISION):  # As the export computes them.
        info['reference'] = reference.encode(images, model.scores(images, config))
    return info


def write_folder(path, write):
    """Makes the folder path through a temporary one: write(tmp) fills it (and may check
    it: nothing is replaced when it raises), then it replaces path; returns path."""
    tmp = path.rstrip(os.sep) + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path
