"""CLIP RN50 image-embedding throughput: our Flax port vs clip's torch ModifiedResNet.

  python benchmarks/clip_embed.py                     # batch 32, 1 warm-up + 4 timed batches
  python benchmarks/clip_embed.py --batches=10 --batch-size=64

Imports torch and clip-anytorch's model.py (loaded by path: `import clip` fails on
pkg_resources). Both sides run the same random weights at RN50's size (layers (3, 4, 6, 3),
width 64, heads 32, output 1024, resolution 224): built in torch, with random BatchNorm
statistics, and ported with unode_jax.models.clip_resnet.convert_state_dict. Rows:

  ours encoder   ImageEncoder on float32 normalised images, host in -> host out
  ours embed     embed() on uint8 256 x 256 images: + resize/crop/normalise on the device
  torch          model(x) under inference_mode, NCHW float32, torch.set_num_threads(cores)

Timed round-robin (one batch of each in turn) so that load from other processes falls on
all rows alike; the median and best of --batches are reported.
"""
import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.fixtures.make_clip_fixtures import random_clip_resnet  # noqa: E402
from unode_jax.models import clip, clip_resnet  # noqa: E402

RN50 = dict(layers=(3, 4, 6, 3), output_dim=1024, heads=32, input_resolution=224, width=64)


def torch_rn50():
    return random_clip_resnet(RN50)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batches', type=int, default=4, help='timed batches per row')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed batches per row, after the first (compiling) call')
    args = parser.parse_args()
    bs = args.batch_size
    torch.set_num_threads(os.cpu_count())

    model = torch_rn50()
    sd = {'visual.' + k: v.numpy() for k, v in model.state_dict().items()}
    config = clip_resnet.clip_config_from_state_dict(sd)
    encoder = clip.ImageEncoder(clip_resnet.convert_state_dict(sd, config), config,
                                batch_size=bs)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(bs, 224, 224, 3)).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    raw = rng.integers(0, 256, (bs, 256, 256, 3), dtype=np.uint8)

    def run_torch():
        with torch.inference_mode():
            return model(x_torch).numpy()

    t0 = time.perf_counter()
    ours = encoder(x)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    clip.embed(encoder, raw)
    compile_embed_s = time.perf_counter() - t0
    ref = run_torch()
    diff = np.abs(ours - ref).max()

    rows = {'ours encoder': lambda: encoder(x), 'ours embed': lambda: clip.embed(encoder, raw),
            'torch': run_torch}
    for fn in rows.values():
        for _ in range(args.warmup):
            fn()
    times = {name: [] for name in rows}
    for _ in range(args.batches):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    print(f'CLIP RN50 image encoder, random weights, batch {bs}, {args.batches} timed batches '
          f'({args.warmup} warm-up)')
    print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} '
          f'with {torch.get_num_threads()} threads; {platform.processor() or platform.machine()}'
          f', {os.cpu_count()} cores')
    print(f'first call (compile + run): encoder {compile_s:.1f} s, embed {compile_embed_s:.1f} s')
    print(f'{"":14s} {"s/batch med":>11s} {"best":>7s} {"images/s":>9s} {"best":>7s}')
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f'{name:14s} {med:11.3f} {min(ts):7.3f} {bs / med:9.1f} {bs / min(ts):7.1f}')
    ratio = statistics.median(times['torch']) / statistics.median(times['ours encoder'])
    print(f'ours encoder / torch throughput: {ratio:.2f}x')
    print(f'max |ours - torch| = {diff:.2e} (max |torch| = {np.abs(ref).max():.2f})')


if __name__ == '__main__':
    main()
