"""XLA's process-wide options, set by launch.py before the first compile.

deterministic_ops(config): config.deterministic adds --xla_gpu_deterministic_ops=true to
XLA_FLAGS (before the backend starts): a GPU then picks deterministic reductions and
scatters (slower), so that the same run on the same GPU gives the same bits.

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


def xla_flags(deterministic, flags=''):
    """XLA_FLAGS with (or as given without) the deterministic-ops flag."""
    if not deterministic or DETERMINISTIC_FLAG in flags.split():
        return flags
    return f'{flags} {DETERMINISTIC_FLAG}'.strip()


def deterministic_ops(config):
    """Sets XLA_FLAGS for config.deterministic (before anything starts the backend)."""
    os.environ['XLA_FLAGS'] = xla_flags(config.deterministic, os.environ.get('XLA_FLAGS', ''))
