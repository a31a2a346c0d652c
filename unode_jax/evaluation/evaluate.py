"""Embed images with a trained model and score a test set (eq. 13-15, AUROC)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tqdm import tqdm

from unode_jax.augment import views
from unode_jax.evaluation import metrics, report, score
from unode_jax.models import normalize_input
from unode_jax.runtime import hosts


# score.features: what eq. (13)'s similarity compares. projection: z = g(f(x)), the
# paper's; encoder: the encoder's feature f(x) that g reads (see configs/default.py).
FEATURES = {'projection': 'z', 'encoder': 'feature'}


@functools.partial(jax.jit, static_argnames=('apply_fn', 'input_norm', 'crop_area', 'features'))
def _embed_batch(variables, images, key, *, apply_fn, input_norm, crop_area, features):
    """Embeddings and logits of one padded uint8 batch; with a key, one test-time view."""
    x = images.astype(jnp.float32) / 255.0
    if key is not None:
        # The authors' test-time views: crop area fixed, no flip, jitter and gray random.
        keys = jax.random.split(key, x.shape[0])
        x = views.random_views(keys, x, flip=False, crop_area=crop_area)
    return forward(apply_fn, variables, x, input_norm, features)


def forward(apply_fn, variables, x, input_norm, features):
    """(z (N, D), logits (N, C)), float32, of float images x in [0, 1] in evaluation mode:
    what eq. (13) compares (score.features) and the head's logits (serving/export.py traces it)."""
    out = apply_fn(variables, normalize_input(x, input_norm), train=False)
    return out[FEATURES[features]].astype(jnp.float32), out['logits'].astype(jnp.float32)


def embed(state, images, config):
    """dict(z (N, D), logits (N, C)) for uint8 images (N, H, W, 3); z is what eq. (13)
    compares (score.features: the projection g(f(x)), or the encoder's f(x)).

    With score.ensemble = T > 1, the average over T test-time views (seeds 0..T-1,
    as the authors' code), raw embeddings and logits averaged. In a multi-host run each
    process embeds its share of the batches and all get every row.
    """
    return hosts.split_rows(functools.partial(_embed_rows, state, config=config), images,
                            align=config.score.batch_size)


def _embed_rows(state, images, first, *, config):
    """embed() of images[first:] of the whole set (first: a multiple of the batch size,
    which keys the test-time views as in one pass over the whole set)."""
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    bs = config.score.batch_size
    passes = config.score.ensemble
    zs, logits = [], []
    for start in range(0, len(images), bs):
        chunk = images[start:start + bs]
        padded = np.zeros((bs,) + images.shape[1:], np.uint8)
        padded[:len(chunk)] = chunk
        z_sum, l_sum = 0.0, 0.0
        for t in range(passes):
            key = None if passes == 1 else jax.random.fold_in(jax.random.key(t), first + start)
            z, l = _embed_batch(variables, padded, key, apply_fn=state.apply_fn,
                                input_norm=config.model.input_norm,
                                crop_area=config.score.crop_area,
                                features=config.score.features)
            z_sum, l_sum = z_sum + z, l_sum + l
        zs.append(np.asarray(z_sum / passes)[:len(chunk)])
        logits.append(np.asarray(l_sum / passes)[:len(chunk)])
    return dict(z=np.concatenate(zs), logits=np.concatenate(logits))


def _metrics(is_normal, s):
    """report.class_metrics of the scores s, with eq. (15)'s lambda before the counts."""
    m = report.class_metrics(dict(s, is_normal=is_normal))
    counts = {k: m.pop(k) for k in ('n_test_inliers', 'n_test_outliers')}
    return dict(m, balance_weight=s['weight'], **counts)


def evaluate_one_class(state, config, bank, x_test, test_is_normal, *, weight, head='binary',
                       reference=None):
    """Scores of every test image and the detection metrics, normal = positive class.

    bank: {'z', 'logits'} of the training images (embed); weight: eq. (15)'s lambda;
    reference: embeddings of held-out normal images (the 'spread' balance), or None. The
    result also holds, under 'balances', eq. (15)'s lambda and AUROC with each balance
    of score.BALANCES (the same embeddings, so the comparison costs no forward pass).
    """
    test = embed(state, x_test, config)
    s = score.unode_scores(bank, test, balance=config.score.balance, head=head, weight=weight)
    result = _metrics(test_is_normal, s)
    result['balances'] = {}
    for balance in score.BALANCES:
        if balance == 'authors' and head != 'binary':
            continue
        w = weight if balance == config.score.balance else score.score_weight(
            bank, balance, head, reference, config.score.spread_share)
        if balance == config.score.balance:
            b = s['score']
        elif {balance, config.score.balance} & set(score.NORM_SCALED):  # other terms
            b = score.unode_scores(bank, test, balance, head, w)['score']
        else:  # eq. (13) and (14) do not depend on lambda: reuse them
            b = s['sim'] + w * s['binary']
        result['balances'][balance] = dict(weight=float(w),
                                           auroc=metrics.auroc(test_is_normal, b))
    return result, s


def evaluate_multiclass(state, config, bank, x_test, outlier_sets, *, weight, head='binary'):
    """Table 3: the inlier test set against each outlier test set in turn.

    outlier_sets: {name: uint8 images}. Returns ({name: metrics}, {name: scores}); each
    scores dict covers the inlier test images followed by that set's, with is_normal.
    """
    kw = dict(balance=config.score.balance, head=head, weight=weight)
    inliers = score.unode_scores(bank, embed(state, x_test, config), **kw)
    results, scores = {}, {}
    for name, x in tqdm(outlier_sets.items(), desc='outlier sets', leave=False,
                        disable=not config.progress_bar):
        out = score.unode_scores(bank, embed(state, x, config), **kw)
        s = {k: np.concatenate([inliers[k], out[k]]) for k in ('score', 'sim', 'binary')}
        s.update(weight=weight, is_normal=np.arange(len(s['score'])) < len(x_test))
        results[name], scores[name] = _metrics(s['is_normal'], s), s
    return results, scores


def evaluate_corrupted(state, config, bank, test_sets, *, weight):
    """The detection metrics of a trained model on each corrupted test set (Table 2),
    without retraining: test_sets yields (name, uint8 images, is_normal), the clean test
    set being the row 'identity'; bank and weight as for evaluate_one_class."""
    out = {}
    for name, x, is_normal in test_sets:
        s = score.unode_scores(bank, embed(state, x, config), balance=config.score.balance,
                               weight=weight)
        out[name] = metrics.detection_metrics(is_normal, s['score'])
    return out
