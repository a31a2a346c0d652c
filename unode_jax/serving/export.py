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
                    SHA-256, platforms; last, 8 reference images and the trained model's
                    scores of them (reference.py), which exported.load rescores

`format='onnx'` writes PATH/model.onnx instead of the first two (onnx_export.py).

exported.py loads it (`unode_jax.serving.exported.load(PATH).score(x)`), prepares images
as the folder datasets do (data/prepare.py), and computes the head's term (eq. 14) and
eq. (15) from the function's outputs in float64 with evaluation/score.py's own
functions, as the trained model does: a float32 softmax would round P(inlier) to 1.0 past
a logit margin of ~17 and tie the most normal images. The network and the similarity run
in float32 on the device, as in evaluation: scores agree to ~1e-6 times lambda.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from unode_jax.runtime import hosts
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.files import write_json
from unode_jax.serving import exported as exported_lib, reference
from unode_jax.serving.contents import (check_exportable, metadata, score_function,
                                        variables_and_bank, write_folder)

PLATFORMS = ('cpu', 'cuda', 'tpu')
FILES = ('model.jax', 'arrays.npz', 'model.json')
EXPORT_FORMATS = ('jax', 'onnx')  # --format / Detector.export(format=)
SEP = '/'  # arrays.npz keys: the argument pytree's dict path, joined.


def lowered(fn, args, platforms=PLATFORMS):
    """jax.export of fn for each of platforms that lowers here; a platform that does not is
    left out with one line naming it and the reason. Raises when this machine's backend is
    among them (the export could not be checked here). Lowered at float32 matmul precision
    (reference.PRECISION), so a GPU does not swap in TF32 where a CPU computes float32."""
    with jax.default_matmul_precision(reference.PRECISION):
        return _lowered(fn, args, platforms)


def _lowered(fn, args, platforms):
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


def flatten(tree):
    return {SEP.join(k): np.asarray(v) for k, v in
            traverse_util.flatten_dict(jax.device_get(tree)).items()}


def export_model(model, config, path, format='jax'):  # noqa: A002 -- the flag's name
    """Writes model (trained.TrainedModel) scored as config says into the folder path, as
    jax.export's function (format 'jax') or ONNX (onnx_export.py); returns path. An
    existing folder is replaced only if it holds an export; a written export that does not
    score its reference images as the trained model is not kept."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f'--format must be one of {", ".join(EXPORT_FORMATS)}, got {format!r}')
    if format == 'onnx':
        from unode_jax.serving.onnx_export import export_onnx
        return export_onnx(model, config, path)
    check_exportable(model, config, path)
    variables, bank = variables_and_bank(model)
    args = dict(variables=flatten(variables), bank=bank)
    size = config.data.image_size
    fn = jax.jit(score_function(model.state.apply_fn, config, model.balance))
    structs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    (n,) = jax.export.symbolic_shape('n')
    images = jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8)
    unflat = {k: traverse_util.unflatten_dict(v, sep=SEP) if k == 'variables' else v
              for k, v in structs.items()}
    exported = lowered(fn, (unflat['variables'], unflat['bank'], images))
    info = metadata(model, config, platforms=list(exported.platforms),
                    jax_version=jax.__version__)
    if not hosts.is_writer():  # Process 0 of a multi-host run writes it.
        return path

    def write(folder):
        with open(os.path.join(folder, 'model.jax'), 'wb') as f:
            f.write(exported.serialize())
        np.savez(os.path.join(folder, 'arrays.npz'), **{
            f'{k}{SEP}{name}': v for k, part in args.items() for name, v in part.items()})
        write_json(os.path.join(folder, 'model.json'), info)
        exported_lib.load(folder)  # Rescores the reference: a drifting export is not kept.
    return write_folder(path, write)
