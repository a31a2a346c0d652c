"""A trained model as ONNX, for services that run ONNX Runtime (or OpenVINO, TensorRT, ...)
and no JAX: `Detector.export(path, format='onnx')` or `--mode=export --format=onnx
--out=PATH`. Needs the [onnx] extra (jax2onnx, onnx, onnxruntime).

  PATH/model.onnx  input 'images': the prepared batch, uint8 (N, S, S, 3), N dynamic
                   (prepare them as data/prepare.py does: data.resize's shorter side and
                   centre crop, or a straight resize, to S = data.image_size; gray made RGB);
                   outputs, float32 (N,): 'score' (eq. 15, higher = more normal), 'sim'
                   (eq. 13) and 'binary' (the head's term), all computed in the graph
  PATH/model.json  export.py's metadata (threshold, lambda, head, balance, ...), the graph's
                   input and outputs under 'onnx', and the reference images with the trained
                   model's float64 scores of them (reference.py)

The graph is what export.py serializes (contents.score_function: the network, the bank's
cosines, the rotation copies and score.knn_k) followed by the head's term and eq. (15) as
evaluation/score.py computes them (softmax, log-softmax, the copies' weighted means), in
float32 where the host computes them in float64: P(inlier) rounds to 1.0 past a logit
margin of ~17, so the most confident images can tie in 'score' here and not in the
float64 scores. jax2onnx converts the traced function's primitives (the jaxpr, not flax's
modules). Before writing, ONNX Runtime scores the reference images: an export that drifts
from the trained model is not written.
"""
import contextlib
import io
import logging
import os
import warnings

import jax
import jax.numpy as jnp
from jax.extend.core import jaxpr_as_fun

from unode_jax.models import compute_dtype
from unode_jax.runtime import hosts
from unode_jax.runtime.errors import ConfigError
from unode_jax.runtime.files import write_json
from unode_jax.serving import reference
from unode_jax.serving.contents import (check_exportable, metadata, score_function,
                                        variables_and_bank, write_folder)

INPUT = 'images'
OUTPUTS = ('score', 'sim', 'binary')
OPSET = 21  # ONNX Runtime 1.16 and later run it
EXTRA = "pip install 'unode-jax[onnx]' (jax2onnx, onnx, onnxruntime)"


def log_softmax(x):
    x = x - jnp.max(x, axis=-1, keepdims=True)
    return x - jnp.log(jnp.sum(jnp.exp(x), axis=-1, keepdims=True))


def head_term(logits, head, balance):
    """score.balanced_head_term in the graph (float32)."""
    if balance == 'authors':
        return logits[:, 0]
    if head == 'transform':
        return log_softmax(logits)[:, -1]
    p = jnp.exp(log_softmax(logits))
    if head == 'binary':
        return p[:, 1]
    return jnp.max(p[:, :-1], axis=1) if head == 'msp' else 1.0 - p[:, -1]


def copy_term(logits, label, head):
    """score.copy_term in the graph: the copy's right class, P (binary) or log P (transform)."""
    if head not in ('binary', 'transform'):
        raise ConfigError(f"test-time copies need the 'binary' or 'transform' head, got {head!r}")
    lp = log_softmax(logits)[:, label]
    return jnp.exp(lp) if head == 'binary' else lp


def graph_terms(out, info):
    """(score, sim, binary) from score_function's outputs, as exported.terms makes them."""
    sim = out['sim']
    binary = head_term(out['logits'], info['head'], info['balance'])
    made = info['copies']
    if made:
        v = [float(w) for w in made['weight']]
        sim = (sim + sum(w * c for w, c in zip(v, out['copy_sim']))) / (1.0 + sum(v))
        rest = [copy_term(lc, label, info['head'])
                for lc, label in zip(out['copy_logits'], made['label'])]
        binary = (binary + sum(w * r for w, r in zip(v, rest))) / (1.0 + sum(v))
    return sim + float(info['weight']) * binary, sim, binary


@contextlib.contextmanager
def quiet():
    """jax2onnx prints debugging lines, logs each plugin it skips and uses names jax
    deprecates: kept from the user."""
    loggers = [logging.getLogger(n) for n in ('jax2onnx', 'onnx_ir')]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def converter():
    """The jax2onnx module; ConfigError naming the extra where it is not installed."""
    try:
        with quiet():
            import jax2onnx
    except ImportError:
        raise ConfigError(f'--format=onnx needs jax2onnx: {EXTRA}') from None
    return jax2onnx


def onnx_model(model, config, info):
    """The ONNX ModelProto of model's scoring as config and model.json's info say."""
    jax2onnx = converter()
    variables, bank = variables_and_bank(model)
    f = score_function(model.state.apply_fn, config, model.balance)
    size = config.data.image_size
    (n,) = jax.export.symbolic_shape('N')
    closed = jax.make_jaxpr(lambda images: graph_terms(f(variables, bank, images), info))(
        jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8))
    try:
        with quiet():  # The primitives alone: flax's modules are not seen again.
            proto = jax2onnx.to_onnx(
                jaxpr_as_fun(closed),
                [jax.ShapeDtypeStruct(('N', size, size, 3), jnp.uint8)], model_name='unode',
                opset=OPSET, input_names=[INPUT], output_names=list(OUTPUTS))
    except Exception as e:  # noqa: BLE001 -- any conversion failure is one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f'--format=onnx: jax2onnx cannot convert this model '
                          f'({type(e).__name__}: {reason}): export it with --format=jax') from e
    for key in ('threshold', 'score', 'weight', 'head'):
        proto.metadata_props.add(key=key, value=str(info[key]))
    return proto


def onnx_scores(data, images):
    """'score' of images by ONNX Runtime from the serialized model `data`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f'--format=onnx checks the model in ONNX Runtime: {EXTRA}') from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(data, options, providers=['CPUExecutionProvider'])
    return session.run(['score'], {INPUT: images})[0]


def export_onnx(model, config, path):
    """Writes model (trained.TrainedModel) scored as config says as path/model.onnx and
    path/model.json; returns path."""
    converter()  # Before any work: a missing package is one line.
    check_exportable(model, config, path)
    if compute_dtype(config.model.dtype) != jnp.float32:
        raise ConfigError(f'--format=onnx exports a float32 network, and model.dtype='
                          f'{config.model.dtype} computes in {compute_dtype(config.model.dtype)} '
                          f'on this {jax.default_backend()}: export it on a CPU (if model.dtype '
                          f'is auto), or use --format=jax')
    info = metadata(model, config, onnx=dict(
        input=dict(name=INPUT, shape=['N', config.data.image_size, config.data.image_size, 3],
                   dtype='uint8', prepared='as unode_jax.data.prepare.prepare_batch(x, '
                   'input.image_size, input.resize) prepares them'),
        outputs=list(OUTPUTS), dtype='float32', opset=OPSET))
    if not hosts.is_writer():  # Process 0 of a multi-host run converts and writes it.
        return path
    data = onnx_model(model, config, info).SerializeToString()
    images, stored = reference.decode(info['reference'], 'the export')
    reference.check(stored, onnx_scores(data, images), 'float32',
                    f'{path}/model.onnx in ONNX Runtime',
                    fix='the graph does not compute what JAX computes: export with --format=jax')

    def write(folder):
        with open(os.path.join(folder, 'model.onnx'), 'wb') as f:
            f.write(data)
        write_json(os.path.join(folder, 'model.json'), info)
    return write_folder(path, write)
