"""Tiny-output convolutions on the CPU: lax.conv vs models/small_conv.py's dense matmul.

  python benchmarks/small_conv.py             # the ResNets' small-output shapes, batch 64
  python benchmarks/small_conv.py --repeats=50 --json_out=/tmp/small_conv.json

For each 3x3 (or 1x1) convolution shape, times the forward pass and forward + gradient
(both arguments) of lax.conv_general_dilated and of small_conv.dense_conv, each jitted
and warmed up, interleaved so other load falls on both alike; also the compile time of
the gradient and the largest difference between the two outputs. Two shapes are ones
the module leaves to lax (a 1x1 kernel; 16 output pixels), to show why.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from unode_jax.models import small_conv  # noqa: E402

NHWC = ('NHWC', 'HWIO', 'NHWC')
# (name, batch, input side, channels in, channels out, kernel, stride)
SHAPES = [
    ('layer4 3x3, 2x2x128 (w16 at 16 px)', 64, 2, 128, 128, 3, 1),
    ('layer4 first 3x3, 4x4x64 -> 2x2x128, stride 2', 64, 4, 64, 128, 3, 2),
    ('layer4 1x1 shortcut, stride 2 (left to lax)', 64, 4, 64, 128, 1, 2),
    ('2x2x512 (resnet18_cifar at 16 px), batch 32', 32, 2, 512, 512, 3, 1),
    ('4x4x128 (left to lax)', 64, 4, 128, 128, 3, 1),
]


def contenders(k, stride):
    pad = ((k // 2, k // 2),) * 2
    ours = small_conv.dense_conv

    def theirs(x, w, strides, pads):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC)
    out = {}
    for name, conv in (('lax', theirs), ('dense', ours)):
        def fwd(x, w, conv=conv):
            return conv(x, w, (stride, stride), pad)
        grad = jax.grad(lambda x, w, fwd=fwd: jnp.sum(fwd(x, w) ** 2), argnums=(0, 1))
        out[name] = jax.jit(fwd), jax.jit(grad)
    return out


def timed(f, *args):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--json_out', default=None)
    args = parser.parse_args()
    rows = []
    print(f'{"shape":48s} {"lax fwd; fwd+grad ms":>22s} {"dense fwd; fwd+grad ms":>24s} '
          f'{"grad compile s lax/dense":>25s} {"max |diff|":>10s}')
    for name, b, size, cin, cout, k, stride in SHAPES:
        x = jax.random.normal(jax.random.key(0), (b, size, size, cin))
        w = 0.05 * jax.random.normal(jax.random.key(1), (k, k, cin, cout))
        fns = contenders(k, stride)
        compile_s = {n: timed(lambda g=g: g.lower(x, w).compile()) for n, (_, g) in fns.items()}
        for f, g in fns.values():
            timed(f, x, w), timed(g, x, w)
        times = {(n, part): [] for n in fns for part in ('fwd', 'grad')}
        for _ in range(args.repeats):
            for n, (f, g) in fns.items():
                times[n, 'fwd'].append(timed(f, x, w))
                times[n, 'grad'].append(timed(g, x, w))
        ms = {key: 1e3 * statistics.median(v) for key, v in times.items()}
        diff = float(jnp.max(jnp.abs(fns['lax'][0](x, w) - fns['dense'][0](x, w))))
        rows.append(dict(shape=name, ms={f'{n}_{p}': v for (n, p), v in ms.items()},
                         grad_compile_s=compile_s, max_abs_diff=diff))
        print(f'{name:48s} {ms["lax", "fwd"]:9.2f}; {ms["lax", "grad"]:9.2f}   '
              f'{ms["dense", "fwd"]:10.2f}; {ms["dense", "grad"]:10.2f}   '
              f'{compile_s["lax"]:11.2f} / {compile_s["dense"]:5.2f}   {diff:10.1e}', flush=True)
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(dict(device=str(jax.devices()[0]), repeats=args.repeats, rows=rows), f,
                      indent=1)


if __name__ == '__main__':
    main()
