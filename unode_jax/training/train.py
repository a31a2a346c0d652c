"""UNODE training: on-device views and hard negatives, the UNODE loss, LARS, under pmap.

Read top to bottom: `create_train_state`, `make_batch` (its indices: sampling.py),
`train_step` (one device's part of a global step), `train` (the host loop with
progress bar, metrics.jsonl, non-finite checks and orbax checkpoints).

The training images live on every device as uint8; each step gathers its batch
by index, makes views and negatives on the device and never returns to the host
except every `log_every` steps for metrics. Every random draw is keyed by
(seed, step, global sample index), so the trajectory does not depend on the
number of devices.
"""
import functools
import itertools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm import tqdm

from unode_jax.augment import negatives, views
from unode_jax.augment.weights import has_negatives
from unode_jax.models import build_model, frozen_mask, normalize_input
from unode_jax.models.unode import head_classes
from unode_jax.models.torchvision import load_torchvision_encoder
from unode_jax.runtime import fingerprint, hosts
from unode_jax.runtime.errors import Interrupted
from unode_jax.runtime.interrupt import deferred_sigint
from unode_jax.torch_io import weights as torch_weights
from unode_jax.training import losses, memory, optim
from unode_jax.training.checkpoint import Checkpointer, resume
from unode_jax.training.devices import AXIS, local_device_positions, replicate, unreplicate
from unode_jax.training.metrics_log import METRICS_FILE, MetricsLog
from unode_jax.training.sampling import image_indices, prefetch, streamed_batches

class TrainState(train_state.TrainState):
    batch_stats: Any


_MODELS_AND_OPTIMIZERS = {}


def model_and_optimizer(config, image_size, bn_axis_name=None, num_classes=2):
    """The model, optimizer and jitted init for a config, built once and reused.

    They are static parts of the TrainState's tree structure, so reusing the same
    objects lets a sweep over classes hit the compilation caches of pmap and jit.
    num_classes: of the head h; 2 (binary, class 1 = inlier), or K + 1 in the labeled
    multi-class setting (classes 0..K-1 the inlier labels, K the hard negatives).
    """
    key = (config.to_json_best_effort(), image_size, bn_axis_name, num_classes)
    if key not in _MODELS_AND_OPTIMIZERS:
        model = build_model(config, num_classes=num_classes, bn_axis_name=bn_axis_name)
        mask = None
        if config.optim.freeze_prefixes:
            shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                                    jnp.zeros((2, image_size, image_size, 3), jnp.float32))
            mask = frozen_mask(shapes['params'], tuple(config.optim.freeze_prefixes))
        init = jax.jit(functools.partial(model.init, train=False))
        _MODELS_AND_OPTIMIZERS[key] = model, optim.create_optimizer(config.optim, mask), init
    return _MODELS_AND_OPTIMIZERS[key]


_PRETRAINED = {}  # path -> torchvision state dict: a class sweep reads the file once.


def pretrained_state_dict(path):
    if path not in _PRETRAINED:
        _PRETRAINED[path] = torch_weights.load_state_dict(path)
    return _PRETRAINED[path]


def check_pretrained(config, image_size):
    """Reads config.model.pretrained and matches it to the model's encoder (shapes only, no
    compile): a bad file stops a run before any work."""
    shapes = jax.eval_shape(functools.partial(build_model(config).init, train=False),
                            jax.random.key(0), jnp.zeros((2, image_size, image_size, 3)))
    load_torchvision_encoder(shapes, pretrained_state_dict(config.model.pretrained),
                             config.model.name, source=config.model.pretrained)


def create_train_state(rng, config, image_size, bn_axis_name=None, num_classes=2) -> TrainState:
    """Fresh variables, the encoder from config.model.pretrained when set."""
    model, tx, init = model_and_optimizer(config, image_size, bn_axis_name, num_classes)
    variables = init(rng, jnp.zeros((2, image_size, image_size, 3), jnp.float32))
    if config.model.pretrained:
        variables = load_torchvision_encoder(
            variables, pretrained_state_dict(config.model.pretrained), config.model.name,
            source=config.model.pretrained)
    state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                              batch_stats=variables['batch_stats'])
    # Strong types throughout (the step counter and the injected learning rate start
    # weakly typed): the step's outputs are strongly typed, and a mismatch between
    # the first and later inputs would compile the train step twice.
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), state)


def device_batch(images, targets, neg_weights, outliers, n_valid=None, partners=None):
    """The pytree train_step reads for one device, as numpy (replicate or stack it).

    Resident: images (n_pad, H, W, 3) uint8, the training set padded, of which the first
    n_valid count, and each image's head target (n_pad,). Streamed (partners given): this
    step's b images, their b mixup partners and b targets, gathered on the host (sampling.
    streamed_batches). neg_weights: the hard transforms' weights; outliers: uint8 images
    for outlier exposure (any one image without it). targets: 1 (inlier) with the binary
    head, the label 0..K-1 with the (K+1)-way head.
    """
    batch = dict(images=images, targets=targets, neg_weights=np.asarray(neg_weights, np.float32),
                 outliers=outliers)
    if partners is None:
        batch['n_valid'] = np.int32(n_valid)
    else:
        batch['partners'] = partners
    return batch


def make_batch(config, rng, step, batch, positions, global_batch):
    """The model input [t(x), t(G(x)), t'(x), t'(G(x))] for this device's positions.

    Returns float32 (4b, H, W, 3) in [0, 1] (views.num_views = 1: [t(x), t(G(x))], (2b, H,
    W, 3), and b transform indices), the indices of x into batch['images'] and the
    index in negatives.transforms of each negative's transform, (2b,) for the rows of G(x)
    and G(x') (the transform head's targets); with negatives.weights='none' (no hard
    negatives) only [t(x), t'(x)], (2b, H, W, 3), and None.
    Keys: one per (step, global position), split into the views' and negatives' keys; the
    paper's per-batch composition of negatives is keyed by the step alone. A streamed
    batch (device_batch) holds this step's images and partners, gathered on the host by
    the same image_indices: the same samples and draws.
    """
    _, aug_rng, neg_rng = (jax.random.fold_in(rng, i) for i in range(3))
    images, outliers, weights = batch['images'], batch['outliers'], batch['neg_weights']
    if 'partners' in batch:
        idx = jnp.arange(positions.shape[0])
        partner_images, partner_idx = batch['partners'], idx
    else:
        idx, partner_idx = image_indices(rng, step, positions, batch['n_valid'],
                                         images.shape[0], global_batch)
        partner_images = images
    x = images[idx].astype(jnp.float32) / 255.0
    step_key = jax.random.fold_in(aug_rng, step)
    keys = jax.vmap(lambda p: jax.random.split(jax.random.fold_in(step_key, p), 7))(positions)
    c = config.negatives
    v = config.views
    view_kw = dict(flip=v.flip, crop_scale=tuple(v.crop_scale), crop_ratio=tuple(v.crop_ratio),
                   jitter=tuple(v.jitter), jitter_p=v.jitter_p, gray_p=v.gray_p)
    if not has_negatives(config):
        rows, row_keys = jnp.concatenate([x, x]), jnp.concatenate([keys[:, 0], keys[:, 1]])
        return views.random_views(row_keys, rows, **view_kw), idx, None
    if c.outliers:  # Outlier exposure: a random external image per sample.
        pick = jax.vmap(lambda k: jax.random.randint(k, (), 0, outliers.shape[0]))(keys[:, 6])
        partner = outliers[pick].astype(jnp.float32) / 255.0
    else:
        partner = partner_images[partner_idx].astype(jnp.float32) / 255.0
    neg_key = jax.random.fold_in(neg_rng, step)
    names = tuple(c.transforms)
    params = {'mixup': {'lam_range': tuple(c.mixup_lam)}} if 'mixup' in names else None
    neg_kw = dict(mode=c.mode, per=c.per, max_compose=c.max_compose or None, names=names,
                  params=params, with_index=True)
    neg1, t1 = negatives.negative_batch(jax.random.fold_in(neg_key, 0), keys[:, 2], x,
                                        partner, weights, **neg_kw)
    neg2, t2 = neg1, t1
    if c.per_view:  # The authors draw an independent negative for each view.
        neg2, t2 = negatives.negative_batch(jax.random.fold_in(neg_key, 1), keys[:, 5], x,
                                            partner, weights, **neg_kw)
    if config.views.num_views == 1:  # L_CE alone: one view of x and of G(x), 2b rows.
        rows, row_keys = jnp.concatenate([x, neg1]), jnp.concatenate([keys[:, 0], keys[:, 3]])
        return views.random_views(row_keys, rows, **view_kw), idx, t1
    # One vmapped call over all 4b rows (one copy of the view code to compile).
    rows = jnp.concatenate([x, neg1, x, neg2])
    row_keys = jnp.concatenate([keys[:, 0], keys[:, 3], keys[:, 1], keys[:, 4]])
    return views.random_views(row_keys, rows, **view_kw), idx, jnp.concatenate([t1, t2])


def train_step(state, batch, *, config, axis_name=AXIS):
    """One device's part of a global step; batch: this device's device_batch. The head's
    targets: 1 = inlier with the binary head (negatives are class 0), the label 0..K-1
    with the (K+1)-way head of the labeled setting (negatives are class K)."""
    n_dev = jax.lax.axis_size(axis_name)
    b = config.batch_size // n_dev
    global_batch = config.batch_size
    positions = jax.lax.axis_index(axis_name) * b + jnp.arange(b)
    rng = jax.random.key(config.seed)
    with jax.named_scope('views_and_negatives'):  # The scopes name ops in profiles.
        views_, idx, transform = make_batch(config, rng, state.step, batch, positions,
                                            global_batch)
        inputs = normalize_input(views_, config.model.input_norm)
    # Head targets, rows [x, G(x), x', G(x')]: eq. (12)'s 1 = inlier view, 0 = hard
    # negative; labeled multi-class (appendix B.3): the label, and class K for negatives;
    # the transform head: the identity class K for the inlier views, each negative's
    # transform 0..K-1 for the negatives.
    num_classes = state.params['head']['kernel'].shape[-1]
    inlier = batch['targets'][idx]
    views_made = config.views.num_views
    if config.head.kind == 'transform' and transform is not None:
        labels = jnp.concatenate([inlier, transform[:b], inlier, transform[b:]][:2 * views_made])
    else:
        negative = jnp.full((b,), 0 if num_classes == 2 else num_classes - 1, jnp.int32)
        labels = jnp.tile(jnp.concatenate([inlier, negative]), views_made)
    with_negatives = has_negatives(config)
    # L = con_weight * L_con + lambda * L_CE; without negatives L_CE has nothing to tell
    # apart, and the loss is NT-Xent on the inlier views alone (Table 4's "None").
    con_weight = config.loss.con_weight
    ce_weight = config.loss.ce_weight if with_negatives else 0.0

    def loss_fn(params):
        out, new_vars = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, inputs,
                                       train=True, mutable=['batch_stats'])
        if with_negatives and views_made == 1:  # L_CE alone (loss.con_weight = 0)
            con = jnp.zeros((), jnp.float32)
            ce = losses.cross_entropy(out['logits'], labels, 2 * global_batch)
            acc = jnp.sum(jnp.argmax(out['logits'], -1) == labels) / (2 * global_batch)
        elif with_negatives:
            z1, zn1, z2, zn2 = jnp.split(out['z'], 4)
            con = losses.contrastive_loss(config.loss.kind, z1, z2, zn1, zn2,
                                          config.loss.temperature, axis_name)
            ce = losses.cross_entropy(out['logits'], labels, 4 * global_batch)
            acc = jnp.sum(jnp.argmax(out['logits'], -1) == labels) / (4 * global_batch)
        else:
            con = losses.inlier_ntxent(*jnp.split(out['z'], 2), config.loss.temperature,
                                       axis_name)
            ce = acc = jnp.zeros((), jnp.float32)
        return con_weight * con + ce_weight * ce, (con, ce, acc, new_vars['batch_stats'])

    grads, (con, ce, acc, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    # Each device's loss is its contribution to the global-batch loss: sum them.
    grads = jax.lax.psum(grads, axis_name)
    con, ce, acc = jax.lax.psum((con, ce, acc), axis_name)
    with jax.named_scope('optimizer'):
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = dict(loss=con_weight * con + ce_weight * ce, loss_con=con, loss_ce=ce, acc_bin=acc,
                   lr=optim.applied_learning_rate(state.opt_state),
                   grad_norm=optax.tree.norm(grads))
    return state, metrics


def make_p_train_step(config, devices=None):
    return jax.pmap(functools.partial(train_step, config=config), axis_name=AXIS,
                    donate_argnums=(0,), devices=devices)


def num_train_steps(config, n_train):
    return int(round(config.optim.num_epochs * (n_train // config.batch_size)))


def _fetched_metrics(pending, ckpt):
    """The rows of metrics.jsonl for the (step, device metrics) pending; FloatingPointError
    at the first non-finite one (after closing ckpt: nothing is saved after it)."""
    rows = [dict(step=s, **{k: float(v[0]) for k, v in jax.device_get(m).items()})
            for s, m in pending]
    for row in rows:
        if not all(np.isfinite(v) for v in row.values()):
            ckpt.close()
            kept = ckpt.latest_step()
            kept = f'step {kept}' if kept is not None else 'none'
            raise FloatingPointError(
                f"non-finite loss at step {row['step']} ({row}); nothing was saved after it "
                f"(last checkpoint: {kept}): lower optim.peak_lr or check the data")
    return rows


def _log_metrics(log, bar, rows, images_per_s):
    """Appends the rows to metrics.jsonl (and TensorBoard); shows the last on the bar."""
    log.write([dict(row, images_per_s=images_per_s) for row in rows])
    bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", img_s=f'{images_per_s:.0f}')
    bar.update(rows[-1]['step'] - bar.n)


def training_arrays(config, x_train, labels=None, n_pad=None):
    """(images padded to n_pad rows, each image's head target, the head's classes): the
    binary head's inlier class 1, the transform head's identity class K, or labels 0..K-1
    for a (K+1)-way head."""
    n = len(x_train)
    if n < config.batch_size:
        raise ValueError(f'only {n} training images for batch_size {config.batch_size}: '
                         f'lower --config.batch_size to at most {n}')
    n_pad = max(n_pad or n, n)
    images = np.zeros((n_pad,) + x_train.shape[1:], np.uint8)
    images[:n] = x_train
    classes = head_classes(config, labels)
    # The inlier class: the binary head's 1, the transform head's last.
    targets = np.full((n_pad,), classes - 1, np.int32)
    if labels is None:
        return images, targets, classes
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.min() < 0:
        raise ValueError(f'labels must be (n,) = ({n},) ints >= 0, got {labels.shape}')
    targets[:n] = labels
    return images, targets, classes


def step_batches(config, images, targets, weights, outliers, n, start, total, stream):
    """Each step's replicated batch from step start on: the device-resident arrays every
    step, or (stream) each step's images, partners and targets sent ahead of time from
    host memory with the weights and outliers sent once."""
    outliers = outliers if outliers is not None else images[:1]
    if not stream:
        return itertools.repeat(replicate(device_batch(images, targets, weights, outliers,
                                                       n_valid=n)))
    print(f'streaming {n} training images ({images.nbytes / 2 ** 20:.0f} MiB, over '
          f'data.device_budget_mb={config.data.device_budget_mb}) from host memory', flush=True)
    constant_r = replicate(dict(neg_weights=np.asarray(weights, np.float32), outliers=outliers))
    batches = prefetch(streamed_batches(config, images[:n], targets[:n], len(images), start,
                                        total, jax.device_count(), local_device_positions()),
                       AXIS)
    return (dict(batch, **constant_r) for batch in batches)


def train(config, workdir, x_train, weights, *, labels=None, n_pad=None, p_train_step=None,
          outliers=None, stream=None, record=None):
    """Train on the normal images x_train (n, H, W, 3) uint8; returns the final TrainState.

    labels: None (one-class and unlabeled multi-class: the binary head), or (n,) ints in
    0..K-1 (labeled multi-class: a (K+1)-way head, class K the hard negatives).
    Resumes from the latest checkpoint in <workdir>/checkpoints if its record says it was
    trained with these training fields on these images (record: the checkpoints' record,
    default fingerprint.training_record of config, x_train and labels; else ConfigError).
    n_pad (>= n) pads the image array so runs on classes of different sizes share one
    compilation, and p_train_step may be passed in for the same reason. stream: keep the
    images in host memory and send each step's to the devices (default: when they exceed
    data.device_budget_mb), with the same samples and draws as on the devices.
    """
    n_dev, n = jax.device_count(), len(x_train)  # Every process's devices share the batch.
    if config.batch_size % n_dev:
        raise ValueError(f'batch_size {config.batch_size} is not divisible by the {n_dev} devices')
    if bool(config.negatives.outliers) != (outliers is not None):
        raise ValueError('pass outlier images exactly when negatives.outliers is set')
    os.makedirs(workdir, exist_ok=True)
    steps_per_epoch = n // config.batch_size
    total = num_train_steps(config, n)
    images, targets, num_classes = training_arrays(config, x_train, labels, n_pad)
    state = create_train_state(jax.random.key(config.seed), config, x_train.shape[1], AXIS,
                               num_classes)
    record = record or fingerprint.training_record(config, x_train, labels)  # Checked on resume.
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    state = resume(ckpt, state, os.path.join(workdir, METRICS_FILE), record)
    state = state.replace(opt_state=optim.set_steps_per_epoch(state.opt_state, steps_per_epoch))
    start = int(state.step)
    meta = dict(n_train=n, steps_per_epoch=steps_per_epoch, total_steps=total,
                weights=[float(w) for w in weights], transforms=list(config.negatives.transforms),
                record=record)
    stream = images.nbytes > config.data.device_budget_mb * 2 ** 20 if stream is None else stream
    state_r = replicate(state)
    batches = step_batches(config, images, targets, weights, outliers, n, start, total, stream)
    fresh = p_train_step is None or stream  # A new step: checked against device memory.
    p_train_step = p_train_step if not fresh else make_p_train_step(config)

    pending = []  # (step, device metrics) since the last host sync
    writer = hosts.is_writer()  # Process 0 alone logs and shows progress.
    bar = tqdm(total=total, initial=start, disable=not (config.progress_bar and writer),
               unit='step', dynamic_ncols=True, desc=os.path.basename(os.path.normpath(workdir)))
    t0, images_seen, step = time.time(), 0, start
    try:  # A Ctrl-C is taken between steps (runtime/interrupt.py: orbax's waits would drop it).
        with deferred_sigint() as ctrl_c, MetricsLog(workdir, config.tensorboard,
                                                            start) as log:
            for step in range(start, total):
                ctrl_c.check()
                batch_r = next(batches)
                if fresh and step == start:  # memory.py: a step that cannot fit stops here.
                    memory.check_step_fits(p_train_step, (state_r, batch_r), config.batch_size,
                                           n_dev)
                state_r, m = p_train_step(state_r, batch_r)
                pending.append((step + 1, m))
                images_seen += config.batch_size
                last = step + 1 == total
                save = last or (step + 1) % config.checkpoint_every == 0
                if save or (step + 1) % config.log_every == 0:
                    _log_metrics(log, bar, _fetched_metrics(pending, ckpt),
                                 images_seen / max(time.time() - t0, 1e-9))
                    pending, t0, images_seen = [], time.time(), 0
                if save:
                    ckpt.save(step + 1, jax.device_get(unreplicate(state_r)), meta)
            ckpt.wait()
            ctrl_c.check()
    except KeyboardInterrupt:
        raise _interrupted(bar, ckpt, step, total, workdir) from None
    bar.close()
    ckpt.close()
    state = unreplicate(state_r)
    if hosts.process_count() > 1:  # One sum per leaf (a compile each): clusters only.
        hosts.assert_same(jax.device_get(jax.tree.map(jnp.sum, state.params)), 'trained parameters')
    return state


def _interrupted(bar, ckpt, step, total, workdir):
    """The one line of a Ctrl-C, once a checkpoint being written has finished."""
    bar.close()
    ckpt.close()
    kept = ckpt.latest_step()
    return Interrupted(f'stopped (Ctrl-C) at step {step} of {total} in {workdir}: rerun the '
                       'same command to resume from '
                       + (f'step {kept}' if kept is not None else 'the start'))
