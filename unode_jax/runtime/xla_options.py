"""XLA's process-wide options, set by launch.py before the first compile.

set_flags(config) writes XLA_FLAGS before the backend starts (XLA reads them once):

- config.deterministic adds --xla_gpu_deterministic_ops=true: a GPU then picks
  deterministic reductions and scatters (slower), so that the same run on the same GPU
  gives the same bits.
- CPU_FLAGS, XLA:CPU's library choice measured fastest for this project's steps (below).

Each flag the user's own XLA_FLAGS already sets is left as they set it.

XLA:CPU (jaxlib 0.10.2) hands single dots and 2-D convolutions to its YNNPACK library
(`--xla_cpu_experimental_ynn_fusion_type`, default individual_dot,individual_convolution).
For the convolutions of this project's CPU models it is slower than XLA's Eigen path: the
CPU recipe's training step (`benchmarks/train_step.py --model=resnet18_cifar_w16
--image_size=16 --batch=16 --xla_variants=default,ynn_dot,...`, interleaved) took 0.0554
s with YNNPACK's convolutions and 0.0466 s without them (1.19x) on a 2-core Xeon with
AVX-512, 0.0566 and 0.0505 s (1.12x) with --xla_cpu_max_isa=AVX2; docs/speed.md has the
other option sets (YNNPACK off, its fusions, oneDNN, one Eigen thread, vector widths).
Dots stay with YNNPACK. The flag names XLA:CPU's options only; other backends ignore it.
To get jaxlib's own choice back: XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
individual_dot,individual_convolution.

JAX's persistent compilation cache, so that a rerun, a resume or the next run of the
same config loads its compiled steps instead of compiling them again (minutes for
WRN-50-2 on an accelerator).

  --compilation_cache=auto   on a GPU or TPU: <XDG_CACHE_HOME or ~/.cache>/unode_jax/xla;
                             on a CPU: off (its compiles take seconds)
  --compilation_cache=DIR    that folder, on any backend
  --compilation_cache=none   off
JAX_COMPILATION_CACHE_DIR, when set, wins (jax reads it itself).
"""
import os

import jax

OFF = ('none', '')


def cache_dir(flag, backend, env=None):
    """The folder the cache goes to, or None (off)."""
    env = os.environ if env is None else env
    if env.get('JAX_COMPILATION_CACHE_DIR'):
        return env['JAX_COMPILATION_CACHE_DIR']
    if flag in OFF:
        return None
    if flag != 'auto':
        return os.path.abspath(os.path.expanduser(flag))
    if backend == 'cpu':
        return None
    base = env.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'unode_jax', 'xla')


def enable(flag):
    """Turns the cache on as flag says (after jax.distributed.initialize: it asks jax for
    the backend); returns its folder or None."""
    path = cache_dir(flag, jax.default_backend())
    if path is not None:
        jax.config.update('jax_compilation_cache_dir', path)
    return path


DETERMINISTIC_FLAG = '--xla_gpu_deterministic_ops=true'
CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=individual_dot',)


def flag_name(flag):
    return flag.split('=', 1)[0]


def with_flags(flags, wanted):
    """flags (an XLA_FLAGS string) with each of `wanted` added whose name it does not set."""
    given = {flag_name(f) for f in flags.split()}
    return ' '.join([flags.strip()] + [f for f in wanted if flag_name(f) not in given]).strip()


def xla_flags(deterministic, flags=''):
    """XLA_FLAGS with CPU_FLAGS and (or as given without) the deterministic-ops flag."""
    return with_flags(flags, CPU_FLAGS + ((DETERMINISTIC_FLAG,) if deterministic else ()))


def set_flags(config=None):
    """Sets XLA_FLAGS for this project (config.deterministic; CPU_FLAGS) before anything
    starts the backend; once it has started, XLA no longer reads them."""
    deterministic = bool(config is not None and config.deterministic)
    os.environ['XLA_FLAGS'] = xla_flags(deterministic, os.environ.get('XLA_FLAGS', ''))
