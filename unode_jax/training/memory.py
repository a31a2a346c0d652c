"""Device memory of the training step, known before the first step.

On a backend that reports its memory (a GPU or TPU: `memory_stats()['bytes_limit']`), the
first model of a run compiles its training step ahead of time and reads XLA's memory
analysis of it; a step that will not fit stops with one line naming the batch size that
does, instead of an out-of-memory error minutes into the run. A CPU reports no limit:
nothing is checked there. `benchmarks/flops.py --memory` prints the same analysis for a
config on any machine.
"""
from unode_jax.runtime.errors import UserError

GIB = 2 ** 30


class DeviceMemoryError(UserError):
    """The training step needs more memory than a device has."""


def device_limit(device=None):
    """Bytes a device can hold (None where the backend does not say: a CPU)."""
    import jax
    stats = (device or jax.local_devices()[0]).memory_stats()
    return (stats or {}).get('bytes_limit')


def step_memory(compiled):
    """XLA's memory analysis of a compiled step, in bytes per device: arguments (the state
    and the batch, the resident training images among them), temp (activations and
    gradients: what grows with the batch) and total (what the step holds at once)."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    held = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            + m.generated_code_size_in_bytes - m.alias_size_in_bytes)
    return dict(arguments=int(m.argument_size_in_bytes), temp=int(m.temp_size_in_bytes),
                total=int(max(held, getattr(m, 'peak_memory_in_bytes', 0) or 0)))


def fitting_batch(mem, batch_size, n_dev, limit):
    """The largest global batch (a multiple of n_dev) whose step fits in `limit` bytes a
    device, taking temp as proportional to the rows per device and the rest as fixed."""
    per_row = mem['temp'] / max(batch_size // n_dev, 1)
    free = limit - (mem['total'] - mem['temp'])
    return int(free // per_row) * n_dev if per_row > 0 and free > 0 else 0


def check_step_fits(step, args, batch_size, n_dev, limit=None):
    """Compiles step(*args) ahead of time where the device reports its memory and raises
    DeviceMemoryError when it will not fit; returns the analysis (None: nothing known)."""
    limit = device_limit() if limit is None else limit
    if not limit:
        return None
    mem = step_memory(step.lower(*args).compile())
    if mem is None or mem['total'] <= limit:
        return mem
    fits = fitting_batch(mem, batch_size, n_dev, limit)
    need, have = mem['total'] / GIB, limit / GIB
    if fits >= n_dev:
        raise DeviceMemoryError(
            f'the training step needs {need:.1f} GiB a device at batch_size={batch_size} and '
            f'a device holds {have:.1f} GiB: --config.batch_size={min(fits, batch_size - n_dev)} '
            'fits (or --config.model.dtype=bfloat16, or more devices)')
    raise DeviceMemoryError(
        f'the training step needs {need:.1f} GiB a device and a device holds {have:.1f} GiB, '
        f'{(mem["total"] - mem["temp"]) / GIB:.1f} GiB of it before any activation (the state '
        'and the resident training images): stream the images (--config.data.device_budget_mb'
        '=0), or a smaller model or image size')
