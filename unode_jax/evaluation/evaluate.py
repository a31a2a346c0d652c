"""Embed images with a trained model and score a test set (eq. 13-15, AUROC)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tqdm import tqdm

from unode_jax.augment import views
from unode_jax.evaluation import copies, metrics, report, score
from unode_jax.models import normalize_input
from unode_jax.runtime import hosts


# score.features: what eq. (13)'s similarity compares. projection: z = g(f(x)), the
# paper's; encoder: the encoder's feature f(x) that g reads (see configs/default.py).
FEATURES = {'projection': 'z', 'encoder': 'feature'}


# score.ensemble_views: the test-time views averaged when score.ensemble = T > 1.
# crop: the authors' (a crop of fixed area score.crop_area, random aspect and place, colour
# jitter and grayscale as in training, no flip); shift: the image moved by up to an eighth
# of its side (reflected at the border; 2 px at 16 px), flipped at random where
# views.flip is on, colours untouched.
ENSEMBLE_VIEWS = ('crop', 'shift')


def _test_view(keys, x, kind, crop_area, flip):
    if kind == 'crop':
        return views.random_views(keys, x, flip=False, crop_area=crop_area)
    if kind == 'shift':
        return jax.vmap(lambda k, im: views.random_shift(k, im, max(1, im.shape[0] // 8),
                                                         flip=flip))(keys, x)
    raise ValueError(f'score.ensemble_views must be one of {ENSEMBLE_VIEWS}, got {kind!r}')


@functools.partial(jax.jit, static_argnames=('apply_fn', 'input_norm', 'view', 'features'))
def _embed_batch(variables, images, key, *, apply_fn, input_norm, view, features):
    """Embeddings and logits of one padded uint8 batch; with a key, one test-time view
    (view: (kind, crop_area, flip))."""
    x = images.astype(jnp.float32) / 255.0
    if key is not None:
        x = _test_view(jax.random.split(key, x.shape[0]), x, *view)
    return forward(apply_fn, variables, x, input_norm, features)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'input_norm', 'copy', 'features'))
def _embed_copy(variables, images, first, *, apply_fn, input_norm, copy, features):
    """Embeddings and logits of one test-time copy (copies.py) of a padded uint8 batch."""
    x = copies.make_copy(images.astype(jnp.float32) / 255.0, first, copy)
    return forward(apply_fn, variables, x, input_norm, features)


def forward(apply_fn, variables, x, input_norm, features):
    """(z (N, D), logits (N, C)), float32, of float images x in [0, 1] in evaluation mode:
    what eq. (13) compares (score.features) and the head's logits (serving/export.py traces it)."""
    out = apply_fn(variables, normalize_input(x, input_norm), train=False)
    return out[FEATURES[features]].astype(jnp.float32), out['logits'].astype(jnp.float32)


def embed(state, images, config, with_copies=True):
    """dict(z (N, D), logits (N, C)) for uint8 images (N, H, W, 3); z is what eq. (13)
    compares (score.features: the projection g(f(x)), or the encoder's f(x)).

    With score.ensemble = T > 1, the average over T test-time views (score.ensemble_views;
    seeds 0..T-1, as the authors' code), raw embeddings and logits averaged. With
    score.copies (and with_copies), also 'copies': dict(z (C, N, D), logits (C, N, C'))
    of the test-time copies (copies.py). In a multi-host run each process embeds its
    share of the batches and all get every row.
    """
    names = tuple(config.score.copies) if with_copies else ()
    out = hosts.split_rows(functools.partial(_embed_rows, state, config=config, names=names),
                           images, align=config.score.batch_size)
    if not names:
        return out
    return dict(z=out['z'], logits=out['logits'],
                copies=dict(z=np.moveaxis(out['copies_z'], 1, 0),
                            logits=np.moveaxis(out['copies_logits'], 1, 0)))


def _embed_rows(state, images, first, *, config, names=()):
    """embed() of images[first:] of the whole set (first: a multiple of the batch size,
    which keys the test-time views and copies as in one pass over the whole set); the
    copies as (N, C, ...) rows, so that hosts.split_rows joins them."""
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    bs = config.score.batch_size
    passes = config.score.ensemble
    view = (config.score.ensemble_views, config.score.crop_area, bool(config.views.flip))
    kw = dict(apply_fn=state.apply_fn, input_norm=config.model.input_norm,
              features=config.score.features)
    copy_list = copies.copy_list(names)
    zs, logits, cz, cl = [], [], [], []
    for start in range(0, len(images), bs):
        chunk = images[start:start + bs]
        padded = np.zeros((bs,) + images.shape[1:], np.uint8)
        padded[:len(chunk)] = chunk
        z_sum, l_sum = 0.0, 0.0
        for t in range(passes):
            key = None if passes == 1 else jax.random.fold_in(jax.random.key(t), first + start)
            z, l = _embed_batch(variables, padded, key, view=view, **kw)
            z_sum, l_sum = z_sum + z, l_sum + l
        zs.append(np.asarray(z_sum / passes)[:len(chunk)])
        logits.append(np.asarray(l_sum / passes)[:len(chunk)])
        if copy_list:
            row = np.int32(first + start)
            got = [_embed_copy(variables, padded, row, copy=c, **kw) for c in copy_list]
            cz.append(np.stack([np.asarray(z)[:len(chunk)] for z, _ in got], axis=1))
            cl.append(np.stack([np.asarray(l)[:len(chunk)] for _, l in got], axis=1))
    out = dict(z=np.concatenate(zs), logits=np.concatenate(logits))
    if copy_list:
        out.update(copies_z=np.concatenate(cz), copies_logits=np.concatenate(cl))
    return out


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
        if (balance == 'authors' and head != 'binary') or (
                balance in score.NORM_SCALED and not score.is_plain(bank)):
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


def evaluate_corrupted(state, config, bank, test_sets, *, weight, head='binary',
                       threshold=float('nan')):
    """The detection metrics of a trained model on each corrupted test set (Table 2),
    without retraining: test_sets yields (name, uint8 images, is_normal), the clean test
    set being the row 'identity'; bank and weight as for evaluate_one_class. With the
    model's threshold (fitted on clean held-out images; NaN: none), also the operating
    point (metrics.operating_point): what the flag does on corrupted images."""
    out = {}
    for name, x, is_normal in test_sets:
        s = score.unode_scores(bank, embed(state, x, config), balance=config.score.balance,
                               head=head, weight=weight)
        out[name] = dict(metrics.detection_metrics(is_normal, s['score']),
                         **metrics.operating_point(is_normal, s['score'], threshold))
    return out
