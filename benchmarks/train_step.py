"""Speed of one UNODE training step: ours (JAX, pmapped) vs the authors' step in eager PyTorch.

  python benchmarks/train_step.py                       # resnet18_cifar, batch 32, 10 timed steps
  python benchmarks/train_step.py --json_out=/tmp/step.json
  python benchmarks/train_step.py --model=wide_resnet50_2 --stem=cifar --batch=128 --notorch
  # The CPU recipe's step (configs/digits.py's network) against its PyTorch twin, and
  # XLA:CPU's library paths timed in the same rounds (docs/speed.md):
  python benchmarks/train_step.py --model=resnet18_cifar_w16 --image_size=16 --batch=16 \
      --xla_variants=ynn_dot,default,ynn_off,ynn_fused,onednn,eigen_1thread,vector512

Both sides do the authors' work per step (our config set to their behaviour): B inlier
images, per view a flip and one negative per image (rotation 90/180/270 with p=0.3,
mixup with another batch image with p=0.7), SimCLR views (resized crop, colour jitter,
grayscale) on all 4B rows, NT-Xent (T=0.5) over the 4B rows + binary cross-entropy,
torchlars-rule LARS + SGD momentum 0.9. Reported per side:
  full step   the whole step from uint8 images resident on the device;
  model only  forward + backward + update on a fixed (4B, S, S, 3) float input;
  views only  the input pipeline (batch gather, negatives, views), no model;
plus XLA's FLOP count of our compiled programs (per device), so achieved FLOP/s and MFU
can be read on any accelerator. images/s counts inlier images (the model sees 4x rows).
torch is optional (`pip install torch==2.13.0`); without it only our half runs. The torch
network exists for resnet18_cifar and its quarter-width resnet18_cifar_w16 (TORCH_WIDTHS).
"""
import json
import math
import os
import platform
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from unode_jax.configs import default  # noqa: E402
from unode_jax.augment import weights as weights_lib  # noqa: E402
from unode_jax.models import DTYPES, STEMS, compute_dtype, normalize_input  # noqa: E402
from unode_jax.training import (devices as devices_lib, losses, optim,  # noqa: E402
                                train as train_lib)

TEMPERATURE = 0.5
# The torch restatement's stem width (its stages: w, 2w, 4w, 8w channels) per our model.
TORCH_WIDTHS = {'resnet18_cifar': 64, 'resnet18_cifar_w16': 16}

# XLA:CPU's library paths, as compiler options of one compile (DebugOptions fields; the
# same names as XLA_FLAGS' --xla_cpu_... flags, repeated enums spelled in full).
YNN = 'xla_cpu_experimental_ynn_fusion_type'


def ynn_types(*types):
    return ','.join(f'LIBRARY_FUSION_TYPE_{t}' for t in types)


XLA_VARIANTS = {
    # jaxlib 0.10.2's default: YNNPACK for single dots and convolutions.
    'default': {YNN: ynn_types('INDIVIDUAL_DOT', 'INDIVIDUAL_CONVOLUTION')},
    'ynn_off': {YNN: ''},  # Eigen and XLA's own emitters only.
    # Convolutions to Eigen: the project's choice (runtime/xla_options.py CPU_FLAGS).
    'ynn_dot': {YNN: ynn_types('INDIVIDUAL_DOT')},
    'ynn_fused': {YNN: ynn_types('INDIVIDUAL_DOT', 'INDIVIDUAL_CONVOLUTION', 'DOT', 'ELTWISE',
                                 'REDUCE')},
    'onednn': {'xla_cpu_use_onednn': True, YNN: ''},
    # Not listed: oneDNN's dot fusions (xla_cpu_experimental_onednn_fusion_type=
    # LIBRARY_FUSION_TYPE_DOT) kill the process with an illegal instruction on jaxlib 0.10.2
    # ("partition compile failed", a 2-core Xeon with AVX-512).
    'eigen_1thread': {'xla_cpu_multi_thread_eigen': False},
    'vector512': {'xla_cpu_prefer_vector_width': 512},
    'vector256': {'xla_cpu_prefer_vector_width': 256},
}

FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'resnet18_cifar', 'Our encoder (configs/default.py model.name). The '
                    f'torch baseline exists for {", ".join(TORCH_WIDTHS)}.')
flags.DEFINE_integer('batch', 32, 'Inlier images per step (the model sees 4x rows).')
flags.DEFINE_integer('image_size', 32, 'Image side in pixels.')
flags.DEFINE_enum('dtype', 'auto', list(DTYPES), 'model.dtype: the compute dtype (auto: '
                  'bfloat16 on a GPU or TPU, float32 on a CPU).')
flags.DEFINE_string('stem', None, 'model.stem for the torchvision-layout ResNets '
                    f'({", ".join(STEMS)}; default: the model\'s own). The paper\'s CIFAR configs: '
                    '--model=wide_resnet50_2 --stem=cifar.')
flags.DEFINE_integer('steps', 10, 'Timed rounds (one step of each measurement per round); '
                     'medians are reported.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps before each measurement.')
flags.DEFINE_integer('num_images', 5000, 'Random uint8 training images held on the device.')
flags.DEFINE_bool('torch', True, 'Run the PyTorch baseline (when torch is installed).')
flags.DEFINE_integer('torch_threads', 0, 'torch.set_num_threads; 0: the number of usable cores. '
                     'On a loaded machine fewer threads can be much faster (OpenMP barriers).')
flags.DEFINE_string('json_out', None, 'Write all numbers to this JSON file.')
flags.DEFINE_list('xla_variants', ['ynn_dot'], 'XLA:CPU option sets to time against each other '
                  f'in the same rounds ({", ".join(XLA_VARIANTS)}): each compiles our programs '
                  'with its compiler options on top of XLA_FLAGS. ynn_dot is what launch.py '
                  'runs with (runtime/xla_options.py), default is jaxlib\'s own choice.')

NEG_PROBS = {'rotation': 0.3, 'mixup': 0.7}  # The authors' default table (not cifar10's).


# --------------------------------------------------------------------------------------
# Shared helpers.
# --------------------------------------------------------------------------------------


def time_interleaved(fns, steps):
    """Seconds per call of each blocking fn in `fns` (name -> fn), timed round-robin one call
    at a time, so that load from other processes falls on every measurement alike."""
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(times, batch, flops=None):
    med = statistics.median(times)
    out = dict(s_per_step=med, s_min=min(times), s_max=max(times), images_per_s=batch / med,
               images_per_s_best=batch / min(times), times=times)
    if flops:
        out['flops'] = flops
        out['flop_per_s'] = flops / med
    return out


def peak_memory_gib():
    """The most device memory held at once so far on the first local device, in GiB, where
    the backend reports it (GPU, TPU); None on a CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats['peak_bytes_in_use'] / 2 ** 30 if 'peak_bytes_in_use' in stats else None


def warm(fn, n):
    for _ in range(n):
        fn()
    return fn


def xla_flops(compiled):
    """FLOPs of a compiled program from XLA's cost analysis (a dict in jax 0.10; older
    versions return a list with one dict per program); None where the backend gives none."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 -- a backend without cost analysis
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    flops = float((ca or {}).get('flops', 0.0))
    return flops if flops > 0 else None


def authors_config(model, batch, image_size, dtype='auto', stem=None):
    """Our default config set to the authors' training step."""
    c = default.get_config()
    c.model.name = model
    c.model.dtype = dtype
    c.model.stem = stem
    c.batch_size = batch
    c.data.image_size = image_size
    c.negatives.transforms = tuple(NEG_PROBS)
    c.negatives.weights = ','.join(f'{k}={v}' for k, v in NEG_PROBS.items())
    c.negatives.mode = 'single'  # One transform per negative, drawn from the weights.
    c.negatives.per_view = True  # An independent negative for each view.
    c.loss.kind = 'authors'  # NT-Xent over all 4B rows.
    c.loss.temperature = TEMPERATURE
    c.optim.name = 'torchlars'
    c.optim.decay_epochs = c.optim.num_epochs
    # Their mixup weight; the partner is another image of the batch on both sides (theirs
    # is an external Tiny-ImageNet image, the same work per image).
    c.negatives.mixup_lam = (0.02, 0.1)
    return c


# --------------------------------------------------------------------------------------
# Ours (JAX).
# --------------------------------------------------------------------------------------


def setup_jax(config, images_np, warmup, options=None):
    """Compiles our three programs (with XLA compiler `options`); returns (info, name ->
    blocking step fn)."""
    options = options or None
    b, s = config.batch_size, config.data.image_size
    devices = jax.local_devices()
    if b % len(devices):
        devices = devices[:1]
    n_dev = len(devices)
    weights = weights_lib.negative_weights(config)
    steps_per_epoch = len(images_np) // b
    res = dict(devices=n_dev, device_kind=devices[0].device_kind, platform=devices[0].platform)

    # 1. The full pmapped step, compiled ahead of time so compilation is timed on its own.
    state = train_lib.create_train_state(jax.random.key(0), config, s, train_lib.AXIS)
    state = state.replace(opt_state=optim.set_steps_per_epoch(state.opt_state, steps_per_epoch))
    # Outlier images unused: the mixup partners are batch images.
    batch = devices_lib.replicate(train_lib.device_batch(
        images_np, np.ones(len(images_np), np.int32), weights, images_np[:1],
        n_valid=len(images_np)), devices)
    holder = [devices_lib.replicate(state, devices)]
    t0 = time.perf_counter()
    compiled = train_lib.make_p_train_step(config, devices).lower(holder[0], batch).compile(
        compiler_options=options)
    compile_s = time.perf_counter() - t0

    def full_step():
        holder[0], m = compiled(holder[0], batch)
        jax.block_until_ready((holder[0], m))

    res['full'] = dict(compile_s=compile_s, flops=xla_flops(compiled))
    holder[0], m = compiled(holder[0], batch)
    res['full']['loss_finite'] = bool(np.isfinite(float(jax.device_get(m['loss'])[0])))
    fns = {'full': warm(full_step, warmup)}

    # 2. Model only: forward + loss + backward + LARS on a fixed float input, plain jit.
    state1 = train_lib.create_train_state(jax.random.key(0), config, s)
    x = jax.random.uniform(jax.random.key(1), (4 * b, s, s, 3), jnp.float32)
    x = normalize_input(x, config.model.input_norm)
    labels = jnp.tile(jnp.repeat(jnp.array([1, 0], jnp.int32), b), 2)

    def model_step(state, x):
        def loss_fn(params):
            out, new_vars = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, x,
                                           train=True, mutable=['batch_stats'])
            z1, zn1, z2, zn2 = jnp.split(out['z'], 4)
            con = losses.contrastive_loss('authors', z1, z2, zn1, zn2, TEMPERATURE)
            return con + losses.cross_entropy(out['logits'], labels, 4 * b), new_vars['batch_stats']

        grads, batch_stats = jax.grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads, batch_stats=batch_stats)  # lr: scheduled

    holder1 = [state1]
    t0 = time.perf_counter()
    compiled1 = jax.jit(model_step, donate_argnums=0).lower(state1, x).compile(
        compiler_options=options)
    res['model'] = dict(compile_s=time.perf_counter() - t0, flops=xla_flops(compiled1))

    def model_only():
        holder1[0] = compiled1(holder1[0], x)
        jax.block_until_ready(holder1[0])

    fns['model'] = warm(model_only, warmup)

    # 3. Views only: batch gather + negatives + views, as the full step makes them.
    positions = jnp.arange(b)
    one_device = jax.tree.map(jnp.asarray, train_lib.device_batch(
        images_np, np.ones(len(images_np), np.int32), weights, images_np[:1],
        n_valid=len(images_np)))

    def views_step(step):
        return train_lib.make_batch(config, jax.random.key(config.seed), step, one_device,
                                    positions, b)

    t0 = time.perf_counter()
    compiled2 = jax.jit(views_step).lower(jnp.int32(0)).compile(compiler_options=options)
    res['views'] = dict(compile_s=time.perf_counter() - t0, flops=xla_flops(compiled2))
    counter = [0]

    def views_only():
        counter[0] += 1
        jax.block_until_ready(compiled2(jnp.int32(counter[0])))

    fns['views'] = warm(views_only, warmup)
    return res, fns


# --------------------------------------------------------------------------------------
# The authors' step in eager PyTorch, restated from the description of their code: batched
# tensor ops on the device, as their (CSI's) augmentation layers.
# --------------------------------------------------------------------------------------


def torch_model(width=64, proj_dim=128, num_classes=2):
    """CIFAR ResNet-18 (3x3 stem, no max-pool; stages of width, 2, 4 and 8 x width channels)
    + projection head + binary head, as our resnet18_cifar (width 64) and _w16 (16)."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn1(self.conv1(x)).relu()
            return (self.bn2(self.conv2(y)) + self.shortcut(x)).relu()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU())
            layers, cin = [], width
            for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
                for j in range(2):
                    layers.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            d = 8 * width
            self.proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
            self.head = nn.Linear(d, num_classes)

        def forward(self, x):
            f = self.layers(self.stem((x - 0.5) / 0.5)).mean((2, 3))
            return self.proj(f), self.head(f)

    return Net()


def t_flip(x):
    import torch
    m = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(m[:, None, None, None], x.flip(3), x)


def t_negatives(x, partner, p_rot=NEG_PROBS['rotation'], lam_range=(0.02, 0.1)):
    """One negative per image: rotation by k*90 (k ~ U{1,2,3}) or mixup with partner."""
    import torch
    n = x.shape[0]
    use_rot = torch.rand(n, device=x.device) < p_rot
    k = torch.randint(1, 4, (n,), device=x.device)
    rot = x.clone()
    for kk in (1, 2, 3):
        sel = use_rot & (k == kk)
        rot[sel] = torch.rot90(x[sel], kk, (2, 3))
    lam = torch.empty(n, 1, 1, 1, device=x.device).uniform_(*lam_range)
    mix = lam * x + (1 - lam) * partner
    return torch.where(use_rot[:, None, None, None], rot, mix)


def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _rgb_to_hsv(x):
    import torch
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    v = maxc
    s = delta / maxc.clamp_min(1e-8)
    d = delta.clamp_min(1e-8)
    h = torch.where(maxc == r, ((g - b) / d) % 6,
                    torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    return h, s, v


def _hsv_to_rgb(h, s, v):
    import torch
    i = torch.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = (i.long() % 6)[:, None]
    choices = [torch.stack(c, 1) for c in
               ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = choices[0]
    for j in range(1, 6):
        out = torch.where(i == j, choices[j], out)
    return out


def t_color_jitter(x, strength=(0.4, 0.4, 0.4, 0.1), p=0.8):
    """Per-sample brightness/contrast/saturation/hue factors, the four ops in one random
    order per batch, applied to a random p of the samples."""
    import torch
    n, dev = x.shape[0], x.device
    bri, con, sat, hue = strength
    u = lambda lo, hi: torch.empty(n, 1, 1, 1, device=dev).uniform_(lo, hi)
    fb, fc, fs, dh = u(1 - bri, 1 + bri), u(1 - con, 1 + con), u(1 - sat, 1 + sat), u(-hue, hue)

    def hue_shift(y):
        h, s, v = _rgb_to_hsv(y)
        return _hsv_to_rgb((h + dh[:, 0]) % 1.0, s, v)

    ops = (lambda y: y * fb,
           lambda y: fc * y + (1 - fc) * _gray(y).mean((1, 2, 3), keepdim=True),
           lambda y: fs * y + (1 - fs) * _gray(y),
           hue_shift)
    y = x
    for i in torch.randperm(4).tolist():
        y = ops[i](y).clamp(0, 1)
    m = torch.rand(n, device=dev) < p
    return torch.where(m[:, None, None, None], y, x)


def t_grayscale(x, p=0.2):
    import torch
    m = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(m[:, None, None, None], _gray(x).expand_as(x), x)


def t_resized_crop(x, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random resized crop of every sample at once: an affine grid + bilinear grid_sample."""
    import torch
    import torch.nn.functional as F
    n, dev = x.shape[0], x.device
    area = torch.empty(n, device=dev).uniform_(*scale)
    r = torch.exp(torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(area * r).clamp(max=1.0)  # Crop width and height as fractions of the image.
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - h)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='reflection', align_corners=False)


def t_views(x):
    """SimCLR views of a batch: colour jitter, grayscale, resized crop (their order)."""
    return t_resized_crop(t_grayscale(t_color_jitter(x)))


def t_loss(z, logits, labels, temperature=TEMPERATURE):
    """NT-Xent over all rows (row i pairs with row i + 2B) + cross-entropy of the binary head."""
    import torch
    import torch.nn.functional as F
    n = z.shape[0]
    z = F.normalize(z, dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float('-inf'))
    target = (torch.arange(n, device=z.device) + n // 2) % n
    return F.cross_entropy(sim, target) + F.cross_entropy(logits, labels)


def t_lars_sgd(params, bufs, lr, wd=1e-6, eta=1e-3, eps=1e-8, momentum=0.9):
    """torchlars rule, then SGD momentum with the learning rate applied after momentum."""
    import torch
    with torch.no_grad():
        for p, buf in zip(params, bufs):
            g = p.grad
            w_norm, g_norm = p.norm(), g.norm()
            ratio = eta * w_norm / (g_norm + wd * w_norm + eps)
            ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
            buf.mul_(momentum).add_((g + wd * p) * ratio)
            p.add_(buf, alpha=-lr)


def num_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def setup_torch(images_np, batch, warmup, threads=0, width=64):
    """Builds the eager torch step; returns (info, name -> blocking step fn)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    threads = threads or num_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous().to(dev)  # uint8 NCHW
    net = torch_model(width).to(dev).train()
    params = list(net.parameters())
    bufs = [torch.zeros_like(p) for p in params]
    b, s = batch, images.shape[-1]
    labels = torch.tensor([1, 0, 1, 0], device=dev).repeat_interleave(b)
    res = dict(threads=threads, device=str(dev), version=torch.__version__)

    def make_rows():
        x = images[torch.randint(0, images.shape[0], (b,), device=dev)].float() / 255
        partner = x.roll(1, 0)  # Mixup partner: another image of the batch.
        x1, x2 = t_flip(x), t_flip(x)
        rows = torch.cat([x1, t_negatives(x1, partner), x2, t_negatives(x2, partner)])
        return t_views(rows)

    def train_on(rows):
        z, logits = net(rows)
        loss = t_loss(z, logits, labels)
        net.zero_grad(set_to_none=True)
        loss.backward()
        t_lars_sgd(params, bufs, lr=0.1)
        return loss

    def full_step():
        train_on(make_rows())
        sync()

    x_fixed = torch.rand(4 * b, 3, s, s, device=dev)

    def model_only():
        train_on(x_fixed)
        sync()

    def views_only():
        make_rows()
        sync()

    with FlopCounterMode(display=False) as counter:  # Convolutions and matmuls only.
        train_on(x_fixed)
    res['flops_model_counter'] = float(counter.get_total_flops())
    res['full'] = dict(loss_finite=bool(torch.isfinite(train_on(make_rows())).item()))
    res['model'], res['views'] = {}, {}
    return res, {'full': warm(full_step, warmup), 'model': warm(model_only, warmup),
                 'views': warm(views_only, warmup)}


# --------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------


def print_table(ours, theirs, batch, image_size):
    def f(v, fmt):
        return '-' if v is None else format(v, fmt)

    def get(r, part, key):
        return None if r is None else r[part].get(key)

    print()
    print(f'UNODE train step: batch {batch} inliers = {4 * batch} rows of '
          f'{image_size}x{image_size}; median of the timed steps ("best": the fastest step, '
          f'the least disturbed by other load)')
    header = f'{"":32s}{"ours (JAX)":>14s}{"torch eager":>14s}{"ours/torch":>12s}'
    print(header)
    print('-' * len(header))
    for part, name in (('full', 'full step'), ('model', 'model only'), ('views', 'views only')):
        for key, label, fmt in (('s_per_step', 's/step', '.3f'),
                                ('images_per_s', 'images/s', '.1f'),
                                ('images_per_s_best', 'images/s best', '.1f')):
            a, t = get(ours, part, key), get(theirs, part, key)
            ratio = None
            if a is not None and t is not None:
                ratio = t / a if key == 's_per_step' else a / t  # > 1: ours is faster.
            print(f'{name + " " + label:32s}{f(a, fmt):>14s}{f(t, fmt):>14s}{f(ratio, ".2f"):>12s}')
    print(f'{"full step spread (min-max s)":32s}'
          f'{f(ours["full"]["s_min"], ".2f") + "-" + f(ours["full"]["s_max"], ".2f"):>14s}'
          + (f'{f(theirs["full"]["s_min"], ".2f") + "-" + f(theirs["full"]["s_max"], ".2f"):>14s}'
             if theirs else f'{"-":>14s}'))
    print('-' * len(header))
    for part, name in (('full', 'full step'), ('model', 'model only'), ('views', 'views only')):
        r = ours[part]  # A backend whose cost analysis gives no FLOPs: '-'.
        gflop = r['flops'] / 1e9 if r.get('flops') else None
        rate = r['flop_per_s'] / 1e9 if r.get('flop_per_s') else None
        print(f'ours {name:11s} compile {r["compile_s"]:5.1f} s   '
              f'XLA FLOPs/step {f(gflop, "9.3f"):>9s} G   '
              f'achieved {f(rate, "8.3f"):>8s} GFLOP/s')
    if theirs:
        flops = theirs['flops_model_counter']
        print(f'torch model only: FlopCounter (conv + matmul) {flops / 1e9:.1f} GFLOP/step, '
              f'{flops / theirs["model"]["s_per_step"] / 1e9:.1f} GFLOP/s')
    print('ours/torch: ratio of images/s (> 1: ours is faster). Achieved FLOP/s use the median '
          'step; MFU = achieved / the chip\'s peak. FLOPs are per device.')


def print_variants(variants, theirs):
    """Each XLA option set's median s/step, and its speed against the first set and torch."""
    first = next(iter(variants.values()))
    print()
    print(f'XLA:CPU option sets, timed in the same rounds (s/step; x: speed against '
          f'{next(iter(variants))}{" and torch" if theirs else ""}, > 1: faster)')
    for part in ('full', 'model', 'views'):
        cells = []
        for v, res in variants.items():
            t = res[part]['s_per_step']
            cell = f'{v} {t:.4f} ({first[part]["s_per_step"] / t:.2f}x'
            if theirs:
                cell += f', {theirs[part]["s_per_step"] / t:.2f}x torch'
            cells.append(cell + ')')
        print(f'  {part:6s} ' + '; '.join(cells))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    b, s = FLAGS.batch, FLAGS.image_size
    config = authors_config(FLAGS.model, b, s, FLAGS.dtype, FLAGS.stem)
    images_np = np.random.default_rng(0).integers(0, 256, (FLAGS.num_images, s, s, 3), np.uint8)
    load0 = os.getloadavg()[0]
    print(f'{platform.processor() or platform.machine()}, {num_cores()} cores, '
          f'load average {load0:.2f}; jax {jax.__version__} on {jax.local_device_count()} '
          f'{jax.default_backend()} device(s); model {FLAGS.model}, stem '
          f'{FLAGS.stem or "(its own)"}, {compute_dtype(FLAGS.dtype).name}')

    unknown = [v for v in FLAGS.xla_variants if v not in XLA_VARIANTS]
    if unknown or not FLAGS.xla_variants:
        raise app.UsageError(f'--xla_variants: unknown {unknown}; known: {", ".join(XLA_VARIANTS)}')
    variants, fns = {}, {}
    for v in FLAGS.xla_variants:
        t0 = time.perf_counter()
        variants[v], v_fns = setup_jax(config, images_np, FLAGS.warmup, XLA_VARIANTS[v])
        fns.update({f'{v}:{k}': fn for k, fn in v_fns.items()})
        print(f'ours ({v}): compiled and warmed up in {time.perf_counter() - t0:.0f} s (full '
              f'step compile {variants[v]["full"]["compile_s"]:.1f} s)')
    ours = variants[FLAGS.xla_variants[0]]

    theirs, torch_note = None, None
    if not FLAGS.torch:
        torch_note = 'torch baseline skipped (--notorch)'
    elif FLAGS.model not in TORCH_WIDTHS:
        torch_note = (f'torch baseline exists for {", ".join(TORCH_WIDTHS)} only, '
                      f'not {FLAGS.model}')
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch_note = ('torch is not installed (pip install torch==2.13.0): '
                          'torch baseline skipped')
    if torch_note:
        print(torch_note)
    else:
        theirs, torch_fns = setup_torch(images_np, b, FLAGS.warmup, FLAGS.torch_threads,
                                        TORCH_WIDTHS[FLAGS.model])
        print(f'torch {theirs["version"]} ({theirs["threads"]} threads, {theirs["device"]}): '
              f'built and warmed up')
        fns.update({f'torch:{k}': v for k, v in torch_fns.items()})

    print(f'timing {FLAGS.steps} rounds of {len(fns)} interleaved steps ...')
    times = time_interleaved(fns, FLAGS.steps)
    for part in ('full', 'model', 'views'):
        for v, res in variants.items():
            res[part].update(summarize(times[f'{v}:{part}'], b, res[part]['flops']))
        if theirs:
            theirs[part].update(summarize(times[f'torch:{part}'], b))

    print_table(ours, theirs, b, s)
    if len(variants) > 1:
        print_variants(variants, theirs)
    peak = peak_memory_gib()
    if peak is not None:
        print(f'peak device memory (all three programs, device 0): {peak:.2f} GiB')
    load1 = os.getloadavg()[0]
    print(f'load average (1 min) at start {load0:.2f}, at end {load1:.2f} on {num_cores()} cores'
          + (': other processes shared the CPU, times are inflated (see "best" and the per-step '
             'times in --json_out)' if max(load0, load1) > num_cores() + 0.5 else ''))
    if FLAGS.json_out:
        out = dict(model=FLAGS.model, stem=FLAGS.stem, dtype=compute_dtype(FLAGS.dtype).name,
                   batch=b, rows=4 * b, image_size=s, steps=FLAGS.steps, peak_memory_gib=peak,
                   warmup=FLAGS.warmup, jax_version=jax.__version__, load_average=(load0, load1),
                   ours=ours, torch=theirs, xla_variants={
                       v: dict(options=XLA_VARIANTS[v], **res) for v, res in variants.items()},
                   torch_note=torch_note,
                   ratios_ours_over_torch=theirs and {
                       f'{part}_{key}': ours[part][key] / theirs[part][key]
                       for part in ('full', 'model', 'views')
                       for key in ('images_per_s', 'images_per_s_best')})
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json_out)), exist_ok=True)
        with open(FLAGS.json_out, 'w') as fh:
            json.dump(out, fh, indent=2)
        print(f'wrote {FLAGS.json_out}')


if __name__ == '__main__':
    app.run(main)
