"""An exported model (export.py) in a service, with jax and numpy alone (no flax, optax,
orbax or tensorflow_datasets is imported):

  from unode_jax.serving import exported
  model = exported.load('exports/digits_class1')
  s = model.score_samples(x)   # uint8 or [0, 1] float (N, H, W) or (N, H, W, C), any size;
                               # float64 (N,), higher = more normal
  label = model.predict(x)     # +1 normal, -1 novel: s < model.threshold_ (fitted on
                               # held-out normal images); the Detector's names
                               # (serving/conventions.py): decision_function, is_novel, ...

The files are read without executing anything: JSON, a .npz without pickles, and
jax.export's serialized StableHLO. load rescores the export's reference images and stops
with a ValueError naming the largest difference when their scores drift from the trained
model's (reference.py argues the tolerance). Images are prepared as in training
(data/prepare.py)
and scored in batches of up to BATCH, each padded to a power of two so that a service
compiles a handful of shapes, not one per request size. The function gives eq. (13)'s
similarity and the head's logits; the head's term and eq. (15) are computed from them
here in float64 (terms), as the trained model computes them.
"""
import os

import jax
import numpy as np

from unode_jax.data.prepare import prepare_batch
from unode_jax.evaluation.score import balanced_head_term, copy_mean, copy_term
from unode_jax.runtime.files import read_json, read_npz
from unode_jax.serving import reference
from unode_jax.serving.conventions import NoveltyConventions

FORMAT = 3  # The model.json 'format' this reader reads (contents.FORMAT).
BATCH = 256
SEP = '/'


class ExportedModel(NoveltyConventions):
    """An export, scored with scikit-learn's names as the Detector is (conventions.py)."""

    def __init__(self, path, rtol=None):
        missing = [f for f in ('model.jax', 'arrays.npz', 'model.json')
                   if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise FileNotFoundError(f'{path} is not an exported model: no {", ".join(missing)} '
                                    '(write one with Detector.export or --mode=export)')
        fix = 'export the model again'
        self.info = read_json(os.path.join(path, 'model.json'), fix)
        if self.info.get('format') != FORMAT:
            raise ValueError(f'{path}: export format {self.info.get("format")!r}, this reader '
                             f'reads {FORMAT}: export the model again with this version')
        arrays = read_npz(os.path.join(path, 'arrays.npz'), fix)
        self.variables = _unflatten({k[len('variables/'):]: v for k, v in arrays.items()
                                     if k.startswith('variables/')})
        self.bank = {k[len('bank/'):]: v for k, v in arrays.items() if k.startswith('bank/')}
        with open(os.path.join(path, 'model.jax'), 'rb') as f:
            try:
                self.function = jax.export.deserialize(bytearray(f.read()))
            except Exception as e:  # noqa: BLE001 -- any parse failure of an untrusted file
                raise ValueError(f'{path}/model.jax does not read ({type(e).__name__}): '
                                 f'{fix}') from None
        if jax.default_backend() not in self.function.platforms:
            raise ValueError(f'{path} was exported for {", ".join(self.function.platforms)}, '
                             f'not this machine\'s {jax.default_backend()}: export it on one')
        self.image_size = int(self.info['input']['image_size'])
        self.resize = self.info['input']['resize']
        images, stored = reference.decode(self.info.get('reference'), f'{path}/model.json')
        reference.check(stored, self.score_prepared(images)['score'],
                        self.info.get('compute_dtype'), path, rtol)

    @property
    def threshold_(self):
        """The fitted threshold (nan when the model held no images out)."""
        t = self.info['threshold']
        return float('nan') if t is None else float(t)

    @property
    def decision_scores_(self):
        """eq. (15) of the normal training images held out of training, float64."""
        return np.asarray(self.info['holdout_scores'], np.float64)

    def score_terms(self, x):
        """{'score': eq. (15), 'sim': eq. (13), 'binary': the head's term}, float64 (N,)."""
        return self.score_prepared(prepare_batch(x, self.image_size, self.resize))

    def score_prepared(self, x):
        """score_terms of images already prepared: uint8 (N, S, S, 3), S = image_size."""
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.shape[1:] != (self.image_size, self.image_size, 3) \
                or not len(x):
            raise ValueError(f'prepared images are uint8 (N, {self.image_size}, '
                             f'{self.image_size}, 3), N >= 1, got {x.dtype} {x.shape}')
        parts = []
        for start in range(0, len(x), BATCH):
            chunk = x[start:start + BATCH]
            padded = np.zeros((_pow2_at_least(len(chunk)),) + chunk.shape[1:], np.uint8)
            padded[:len(chunk)] = chunk
            out = {k: np.asarray(v) for k, v in
                   self.function.call(self.variables, self.bank, padded).items()}
            parts.append(terms(out['sim'][:len(chunk)], out['logits'][:len(chunk)], self.info,
                               out.get('copy_sim', np.zeros((0, 0)))[:, :len(chunk)],
                               out.get('copy_logits', np.zeros((0, 0, 0)))[:, :len(chunk)]))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def terms(sim, logits, info, copy_sim=(), copy_logits=()):
    """{'score', 'sim', 'binary'}, float64, from the exported function's float32 similarity
    and logits and model.json's lambda, head and balance: score.unode_scores' head term
    and sum (float64, so confident images do not tie at P(inlier) = 1.0); with the
    rotation copies, the weighted means over the image and its copies (score.copy_mean)."""
    sim = np.asarray(sim, np.float64)
    binary = balanced_head_term(logits, info['head'], info['balance'])
    made = info.get('copies')
    if made:
        sim = copy_mean(sim, np.asarray(copy_sim, np.float64), made['weight'])
        binary = copy_mean(binary, [copy_term(lc, label, info['head'])
                                    for lc, label in zip(copy_logits, made['label'])],
                           made['weight'])
    return dict(score=sim + float(info['weight']) * binary, sim=sim, binary=binary)


def load(path, rtol=None):
    """The exported model in folder path, its reference images rescored: a ValueError when
    they drift past the tolerance (reference.RTOL of its compute dtype; rtol overrides it)."""
    return ExportedModel(path, rtol)


def _pow2_at_least(n):
    return 1 << max(n - 1, 0).bit_length()


def _unflatten(flat):
    """{'a/b/c': array} -> {'a': {'b': {'c': array}}} (plain dicts, as the export traced)."""
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree
