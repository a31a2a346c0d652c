"""A trained model as a self-contained folder a service loads with jax and numpy alone:
`Detector.export(path)` or `launch.py --mode=export --workdir=RUN --out=PATH`.

  PATH/model.jax    the inference function, serialized with jax.export: the network in
                    evaluation mode on uint8 images (N, S, S, 3) prepared at the model's
                    size (N any: a symbolic dimension) -> the largest cosine similarity to
                    the bank (eq. 13) and the head's logits; lowered for cpu, cuda and tpu
                    (a platform that cannot be lowered here is left out, with one line
                    naming it and why)
  PATH/arrays.npz   its arguments: the network's variables, the unit-norm bank
  PATH/model.json   what it expects: input size, dtype, channels, resize, score
                    direction, threshold, lambda, head, balance, the training config's
                    SHA-256, platforms

exported.py loads it (`unode_jax.serving.exported.load(PATH).score(x)`), prepares images
as the folder datasets do (data/images.py), and computes the head's term (eq. 14) and
eq. (15) from the function's outputs in float64 with evaluation/score.py's own
functions, as the trained model does: a float32 softmax would round P(inlier) to 1.0 past
a logit margin of ~17 and tie the most normal images. The network and the similarity run
in float32 on the device, as in evaluation: scores agree to ~1e-6 times lambda.
"""
import hashlib
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from unode_jax.evaluation import copies, score
from unode_jax.evaluation.evaluate import forward
from unode_jax.models import compute_dtype
from unode_jax.runtime import hosts
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.files import write_json
from unode_jax.training.losses import l2_normalize

FORMAT = 2  # model.json's 'format': what exported.py reads (2: the function returns logits).
PLATFORMS = ('cpu', 'cuda', 'tpu')
FILES = ('model.jax', 'arrays.npz', 'model.json')
SEP = '/'  # arrays.npz keys: the argument pytree's dict path, joined.


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
            out['copy_sim'] = jnp.stack([nearest(zc, bz) for (zc, _), bz in
                                         zip(got, bank['copy_z'])])
            out['copy_logits'] = jnp.stack([lc.astype(jnp.float32) for _, lc in got])
        return out
    return f


def lowered(fn, args, platforms=PLATFORMS):
    """jax.export of fn for each of platforms that lowers here; a platform that does not is
    left out with one line naming it and the reason. Raises when this machine's backend is
    among them (the export could not be checked here)."""
    try:
        return jax.export.export(fn, platforms=platforms)(*args)
    except Exception:  # noqa: BLE001 -- find which platform, and say so below
        pass
    ok = []
    for p in platforms:
        try:
            jax.export.export(fn, platforms=(p,))(*args)
            ok.append(p)
        except Exception as e:  # noqa: BLE001 -- any failure to lower is named
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            if p == jax.default_backend():
                raise RuntimeError(f'export: the model does not lower for this machine\'s '
                                   f'{p} ({type(e).__name__}: {reason})') from e
            print(f'export: left out platform {p}, which does not lower here '
                  f'({type(e).__name__}: {reason})', flush=True)
    return jax.export.export(fn, platforms=tuple(ok))(*args)


def config_sha256(config):
    return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()


def flatten(tree):
    return {SEP.join(k): np.asarray(v) for k, v in
            traverse_util.flatten_dict(jax.device_get(tree)).items()}


def export_model(model, config, path):
    """Writes model (trained.TrainedModel) scored as config says into the folder path;
    returns path. An existing folder is replaced only if it holds an export."""
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
    if os.path.exists(path) and not (os.path.isdir(path) and set(os.listdir(path)) <= set(FILES)):
        raise ConfigError(f'--out={path} exists and is not an export: pick a new folder')
    z = np.asarray(model.bank['z'], np.float32)
    bank = dict(z=np.asarray(l2_normalize(jnp.asarray(z))),
                mean_norm=np.float32(np.mean(np.linalg.norm(z.astype(np.float64), axis=1))))
    made = model.bank.get('copies')
    if made:
        bank['copy_z'] = np.asarray(l2_normalize(jnp.asarray(made['z'], jnp.float32)))
    variables = dict(params=model.state.params, batch_stats=model.state.batch_stats)
    args = dict(variables=flatten(variables), bank=bank)
    size = config.data.image_size
    fn = jax.jit(score_function(model.state.apply_fn, config, model.balance))
    structs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    (n,) = jax.export.symbolic_shape('n')
    images = jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8)
    unflat = {k: traverse_util.unflatten_dict(v, sep=SEP) if k == 'variables' else v
              for k, v in structs.items()}
    exported = lowered(fn, (unflat['variables'], unflat['bank'], images))
    expects = dict(image_size=size, dtype='uint8', channels=[1, 3], resize=config.data.resize,
                   layout='(N, H, W) or (N, H, W, C), any H and W')
    info = dict(format=FORMAT, input=expects,
                score='higher = more normal; novel where score < threshold',
                threshold=None if np.isnan(model.threshold) else model.threshold,
                quantile=model.quantile,
                holdout_images=int(len(model.holdout_scores)), weight=float(model.weight),
                head=model.head, balance=model.balance, step=model.step,
                knn_k=int(config.score.knn_k),
                copies=None if not made else dict(
                    transforms=list(config.score.copies),
                    weight=[float(v) for v in made['weight']],
                    label=[int(v) for v in made['label']]),
                config_sha256=config_sha256(config), model=config.model.name,
                compute_dtype=compute_dtype(config.model.dtype).name,
                platforms=list(exported.platforms), jax_version=jax.__version__)
    if not hosts.is_writer():  # Process 0 of a multi-host run writes it.
        return path
    tmp = path.rstrip(os.sep) + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, 'model.jax'), 'wb') as f:
        f.write(exported.serialize())
    np.savez(os.path.join(tmp, 'arrays.npz'),
             **{f'{k}{SEP}{name}': v for k, part in args.items() for name, v in part.items()})
    write_json(os.path.join(tmp, 'model.json'), info)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path
