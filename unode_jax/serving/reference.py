"""An export's reference: a few prepared images and the trained model's float64 scores of
them, in model.json. export.py and onnx_export.py write it; exported.py's load (and an ONNX
Runtime service, as the README shows) rescores the images and stops on drift: the anomalib
users' most filed deployment complaint is exported scores that quietly differ from the
trained model's. numpy and the standard library alone (exported.py imports it).

  "reference": {"shape": [8, S, S, 3], "dtype": "uint8",
                "images_base64": the images' bytes in C order, base64,
                "score": [...], "sim": [...], "binary": [...]}   eq. (15), (13), (14)'s term

Which images: a fitted image itself is useless here. It is in the bank, so eq. (13) is its
self-match, a cosine of 1 whatever the network computes (to first order): a conv kernel
scaled by 1% moves such an image's score by ~1e-5, under any tolerance float32 needs. So
half are blends of two fitted images (the pixel mean of a pair; near the training
distribution, so the head's probability is not saturated either), when the export has the
fitted images (a model just fitted; one restored from a workdir does not keep them), and
the rest a synthetic batch from a fixed seed (out of distribution, where the similarity is
steep: the same 1% moves those scores by ~1e-3). The blends show the fitted images they
mix: an export travels with them.
"""
import base64

import numpy as np

from unode_jax.data.prepare import resize_bilinear

COUNT = 8  # reference images
SEED = 0  # of the synthetic batch
# The drift tolerance: |rescored - stored| <= ATOL + RTOL * scale for every reference image,
# scale = the largest |sim| + |lambda * binary| of the reference (the size of the numbers the
# float32 network and the sum produce; a relative bound on the score alone would be
# meaningless where the two terms cancel to near 0).
# float32 network: on the machine that exported it, the export rescores its reference to
# ~1e-6 of the scale (tests/test_export.py: 1e-5 absolute on scores of order 1, other batch
# sizes and padding included); another CPU (AVX2 against AVX-512: other kernels, the other
# rounding, docs/reliability.md) or another XLA moves a float32 ResNet's outputs by ~1e-6
# relative. 1e-4 leaves 100 times that, and still stops what drift is: other weights, other
# preprocessing, an op lowered differently. A GPU that computes float32 convolutions in
# TF32 (JAX's default precision on recent NVIDIA GPUs) moves them by ~1e-3, and is reported:
# load(path, rtol=1e-2) accepts it knowingly.
# bfloat16 (model.dtype=auto on a GPU or TPU): one rounding is 2^-8 = 4e-3 relative, and
# another backend fuses, so rounds, elsewhere: 3e-2.
RTOL = {'float32': 1e-4, 'bfloat16': 3e-2}
PRECISION = 'float32'  # jax.default_matmul_precision of the export and its reference scores
ATOL = 1e-6


def reference_images(x_fit, size, count=COUNT):
    """count prepared uint8 images (count, size, size, 3): up to count // 2 blends of pairs of
    evenly spaced images of x_fit (the model's prepared training images, when given), then
    synthetic_images."""
    blends = np.zeros((0, size, size, 3), np.uint8)
    if x_fit is not None and len(x_fit) >= 2 and tuple(x_fit.shape[1:]) == (size, size, 3):
        rows = np.unique(np.linspace(0, len(x_fit) - 1, count // 2 + 1).round().astype(int))
        pairs = np.asarray(x_fit)[rows].astype(np.uint16)
        blends = ((pairs[:-1] + pairs[1:] + 1) // 2).astype(np.uint8)
    return np.concatenate([blends, synthetic_images(size, count - len(blends))])


def synthetic_images(size, count=COUNT, seed=SEED):
    """Deterministic uint8 (count, size, size, 3): half smooth blobs (coarse noise, resized),
    half pixel noise, so that both the network's low and high frequencies are exercised."""
    rng = np.random.default_rng(seed)
    smooth = resize_bilinear(rng.integers(0, 256, (count // 2, 4, 4, 3), np.uint8), size, size)
    noise = rng.integers(0, 256, (count - count // 2, size, size, 3), np.uint8)
    return np.concatenate([smooth, noise])


def encode(images, terms):
    """model.json's 'reference' of the prepared images and their {'score', 'sim', 'binary'}."""
    images = np.ascontiguousarray(images, np.uint8)
    out = dict(shape=list(images.shape), dtype='uint8',
               images_base64=base64.b64encode(images.tobytes()).decode('ascii'))
    out.update({k: [float(v) for v in np.asarray(terms[k], np.float64)]
                for k in ('score', 'sim', 'binary')})
    return out


def decode(ref, where):
    """(images uint8 (n, S, S, 3), {'score', 'sim', 'binary'} float64 (n,)) of model.json's
    'reference'; ValueError naming `where` when it is missing or does not read."""
    try:
        shape = tuple(int(v) for v in ref['shape'])
        images = np.frombuffer(base64.b64decode(ref['images_base64'], validate=True),
                               np.uint8).reshape(shape)
        terms = {k: np.asarray(ref[k], np.float64) for k in ('score', 'sim', 'binary')}
        ok = len(shape) == 4 and shape[0] >= 1 and shape[3] == 3 and ref['dtype'] == 'uint8'
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f'{where}: its reference images and scores do not read '
                         f'({type(e).__name__}): export the model again') from None
    if not ok or any(v.shape != (shape[0],) for v in terms.values()):
        raise ValueError(f'{where}: its reference images and scores do not match: export the '
                         'model again')
    return images, terms


LOAD_FIX = 'export it again on this machine, or pass load(path, rtol=R) to accept the difference'


def check(stored, got, compute_dtype, where, rtol=None, fix=LOAD_FIX):
    """Raises ValueError, one line naming the largest difference and saying `fix`, when the
    scores `got` of the reference images differ from the `stored` terms by more than the
    tolerance (ATOL + rtol * scale; rtol default RTOL of the model's compute dtype)."""
    rtol = RTOL.get(compute_dtype, max(RTOL.values())) if rtol is None else float(rtol)
    want = np.asarray(stored['score'], np.float64)
    got = np.asarray(got, np.float64).reshape(want.shape)
    sim = np.asarray(stored['sim'], np.float64)
    scale = float(np.max(np.abs(sim) + np.abs(want - sim)))
    tolerance = ATOL + rtol * scale
    diff = np.abs(got - want)
    if np.all(diff <= tolerance):  # False for a nan
        return
    i = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
    raise ValueError(f'{where} scores its reference images unlike the trained model: image '
                     f'{i} scores {got[i]:.9g} here against {want[i]:.9g} (largest difference '
                     f'{diff[i]:.3g}, tolerance {tolerance:.3g} = {rtol:g} x scale '
                     f'{scale:.4g} + {ATOL:g}): {fix}')
