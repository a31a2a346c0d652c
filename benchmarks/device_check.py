"""The first run on an accelerator, in one command and under 10 minutes: is everything
there, does the suite's device part pass, how fast is the step, how much memory.

  bash benchmarks/device_check.sh                          # on the GPU/TPU machine
  DEVICE_CHECK_FMNIST=/usr/share/datasets/fashion-mnist bash benchmarks/device_check.sh
  DEVICE_CHECK_TINY=1 bash benchmarks/device_check.sh      # every stage, small, on a CPU

Stages (each timed and recorded, a failed one does not stop the others):
  a  versions and devices (kind, count, memory)
  b  a pytest subset on the device: the train step and its memory check, the streamed
     path, kNN scoring, checkpoint save and restore (eval from a trained workdir), one
     end-to-end run
  c  step time, images/s and model FLOP utilisation (XLA's FLOPs / the chip's peak) with
     peak device memory: WRN-50-2 at 32 px with the CIFAR stem, batch 128; WRN-50-2 at
     224 px, batch 32; the authors' ResNet-18 at 32 px, batch 32 (bfloat16 on an
     accelerator: model.dtype='auto')
  d  with DEVICE_CHECK_FMNIST (a Fashion-MNIST idx folder, or an arrays .npz): class 0
     trained (configs/fashion_mnist_cpu.py) for as many epochs as fit the time left at
     the step time stage c measured for that recipe (or DEVICE_CHECK_FM_EPOCHS), and
     scored: AUROC, its terms and both baselines
  e  XLA's compiled memory of the 224 px WRN-50-2 step at batch 128, float32 and bfloat16
The summary goes to $OUT (or a folder it prints) as summary.json and summary.txt.
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.environ.get('DEVICE_CHECK_TINY', '') not in ('', '0')
BUDGET_S = float(os.environ.get('DEVICE_CHECK_BUDGET_S', 540))
# Dense bfloat16 peak FLOP/s per chip, by a piece of jax's device_kind (vendors' sheets).
PEAK_BF16 = (('H200', 989e12), ('H100', 989e12), ('A100', 312e12), ('L4', 121e12),
             ('TPU v6', 918e12), ('TPU v5p', 459e12), ('TPU v5', 197e12), ('TPU v4', 275e12))
FM_STEP = 'resnet18_cifar_w16 16px b16 (stage d)'  # configs/fashion_mnist_cpu.py's step
STEP_CONFIGS = (  # (name, benchmarks/train_step.py flags)
    ('wrn50_2 32px cifar stem b128', ['--model=wide_resnet50_2', '--stem=cifar',
                                      '--image_size=32', '--batch=128']),
    ('wrn50_2 224px b32', ['--model=wide_resnet50_2', '--image_size=224', '--batch=32']),
    ('resnet18_cifar 32px b32', ['--model=resnet18_cifar', '--image_size=32', '--batch=32']),
    (FM_STEP, ['--model=resnet18_cifar_w16', '--image_size=16', '--batch=16']),
)
FM_STEPS_PER_EPOCH = 6000 // 16  # one Fashion-MNIST class at configs/fashion_mnist_cpu.py's batch
FM_RESERVE_S = 120  # compiling, AutoAugOOD, scoring 10,000 test images and the baselines
TINY_STEP = [('tiny 16px b4', ['--model=tiny', '--image_size=16', '--batch=4'])]
TESTS = ['tests/test_memory.py', 'tests/test_score.py', 'tests/test_workdir_config.py',
         'tests/test_train.py::test_streaming_from_host_matches_resident_training',
         'tests/test_train.py::test_prefetch_puts_each_batch_ahead_on_the_devices_as_pmap_lays_'
         'them_out', 'tests/test_train.py::test_quick_start_detects_novel_digits_and_sweep_'
         'resumes']
TINY_TESTS = ['tests/test_memory.py', 'tests/test_score.py::test_leave_one_out_excludes_self']
MEMORY_224 = ['--config=configs/cifar10.py', '--config.model.stem=imagenet_224',
              '--config.batch_size=128', '--memory']


def peak_flops(kind):
    return next((peak for name, peak in PEAK_BF16 if name.lower() in kind.lower()), None)


def sh(cmd, timeout, env=None):
    """(return code, stdout + stderr) of cmd run in the repository; 124 on a timeout."""
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})))
        return r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b'') + (e.stderr or b'')
        return 124, out.decode(errors='replace') if isinstance(out, bytes) else out


def stage_env():
    import jax
    import jaxlib
    devices = jax.devices()
    stats = devices[0].memory_stats() or {}
    versions = {'python': sys.version.split()[0], 'jax': jax.__version__,
                'jaxlib': jaxlib.__version__}
    for name in ('flax', 'optax', 'orbax.checkpoint', 'numpy', 'ml_collections', 'dm_pix'):
        try:
            versions[name] = getattr(__import__(name, fromlist=['_']), '__version__', '?')
        except ImportError:
            versions[name] = None
    return dict(versions=versions, backend=jax.default_backend(), device_count=len(devices),
                device_kind=devices[0].device_kind, process_count=jax.process_count(),
                memory_gib=stats.get('bytes_limit', 0) / 2 ** 30 or None)


def stage_tests(env, out_dir):
    platform = 'cpu' if env['backend'] == 'cpu' else env['backend']
    # Its own temporary folders: pytest's default ones rotate those of a pytest around it.
    code, out = sh([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider',
                    f'--basetemp={os.path.join(out_dir, "pytest")}',
                    *(TINY_TESTS if TINY else TESTS)], timeout=240, env={'JAX_PLATFORMS': platform})
    last = [line for line in out.strip().splitlines() if line.strip()][-1:] or ['']
    return dict(ok=code == 0, rc=code, summary=last[0], skipped=[
        line for line in out.splitlines() if line.startswith('SKIPPED')], tail=out[-3000:])


def stage_steps(env, out_dir, deadline):
    rows, peak = [], peak_flops(env['device_kind'])
    steps = ['--steps=2', '--warmup=1', '--num_images=16'] if TINY else [
        '--steps=10', '--warmup=2', '--num_images=1024']
    for name, flags in (TINY_STEP if TINY else STEP_CONFIGS):
        left = deadline - time.time()
        if left < 30:
            rows.append(dict(name=name, ok=False, error='no time left'))
            continue
        path = os.path.join(out_dir, f'step_{len(rows)}.json')
        code, text = sh([sys.executable, 'benchmarks/train_step.py', *flags, *steps, '--notorch',
                         f'--json_out={path}'], timeout=min(left, 200))
        if code or not os.path.exists(path):
            rows.append(dict(name=name, ok=False, rc=code, error=text.strip()[-500:]))
            continue
        with open(path) as f:
            res = json.load(f)
        full = res['ours']['full']
        rate = full.get('flop_per_s')
        rows.append(dict(name=name, ok=True, dtype=res['dtype'], s_per_step=full['s_per_step'],
                         images_per_s=full['images_per_s'], devices=res['ours']['devices'],
                         tflop_per_step=(full.get('flops') or 0) / 1e12 or None,
                         mfu=rate / peak if rate and peak else None,
                         peak_memory_gib=res.get('peak_memory_gib'),
                         compile_s=full['compile_s']))
    return rows


def fm_epochs(steps, deadline):
    """Stage d's epochs: DEVICE_CHECK_FM_EPOCHS, or as many as the time left holds at the
    step time stage c measured for the recipe (1 in tiny mode or without a measurement)."""
    if os.environ.get('DEVICE_CHECK_FM_EPOCHS'):
        return int(os.environ['DEVICE_CHECK_FM_EPOCHS'])
    row = next((r for r in steps if r['name'] == FM_STEP and r['ok']), None)
    if TINY or row is None:
        return 1
    left = deadline - time.time() - FM_RESERVE_S
    return int(max(1, min(100, left // (row['s_per_step'] * FM_STEPS_PER_EPOCH))))


def stage_fashion_mnist(env, out_dir, deadline, steps):
    source = os.environ.get('DEVICE_CHECK_FMNIST')
    if not source:
        return dict(ok=None, note='skipped: set DEVICE_CHECK_FMNIST to an idx folder or .npz')
    epochs = fm_epochs(steps, deadline)
    data = ([f'--config.data.path={source}'] if not source.endswith('.npz') else
            ['--config.data.name=arrays', f'--config.data.path={source}'])
    workdir = os.path.join(out_dir, 'fashion_mnist')
    t0 = time.time()
    code, text = sh([sys.executable, 'launch.py', '--config=configs/fashion_mnist_cpu.py',
                     f'--workdir={workdir}', '--classes=0', *data,
                     f'--config.optim.num_epochs={epochs}', '--config.progress_bar=False'],
                    timeout=max(deadline - time.time(), 30))
    results = os.path.join(workdir, 'class_0', 'results.json')
    if code or not os.path.exists(results):
        return dict(ok=False, rc=code, error=text.strip()[-800:])
    with open(results) as f:
        r = json.load(f)
    keys = ('auroc', 'auroc_sim', 'auroc_binary', 'auroc_untrained', 'auroc_pixel_knn')
    return dict(ok=True, epochs=int(epochs), steps=r['steps'], seconds=time.time() - t0,
                compute_dtype=r.get('compute_dtype'), **{k: r.get(k) for k in keys})


def stage_memory(deadline):
    rows = []
    base = ['--config=configs/digits.py', '--memory'] if TINY else MEMORY_224
    for dtype in ('float32', 'bfloat16'):
        left = deadline - time.time()
        if left < 20:
            rows.append(dict(dtype=dtype, ok=False, error='no time left'))
            continue
        code, text = sh([sys.executable, 'benchmarks/flops.py', *base,
                         f'--config.model.dtype={dtype}'], timeout=min(left, 200))
        line = next((x for x in text.splitlines() if x.startswith('memory of the step')), None)
        rows.append(dict(dtype=dtype, ok=code == 0 and line is not None,
                         line=line or text.strip()[-500:]))
    return rows


def fmt(v, spec, width=0):
    """v formatted by spec, or '-' for a number the backend does not give; right-aligned."""
    return ('-' if v is None else format(v, spec)).rjust(width)


def report(summary):
    e = summary['env']
    lines = [f'device check{" (tiny)" if TINY else ""}: {e["device_count"]} x {e["device_kind"]} '
             f'({e["backend"]}, {fmt(e["memory_gib"], ".0f")} GiB each), jax {e["versions"]["jax"]}'
             f', {summary["seconds"]:.0f} s',
             f'tests: {"ok" if summary["tests"]["ok"] else "FAILED"}: '
             f'{summary["tests"]["summary"]}',
             '', f'{"step":32s}{"dtype":>10s}{"s/step":>9s}{"img/s":>9s}{"TFLOP":>8s}'
                 f'{"MFU":>7s}{"peak GiB":>10s}']
    for r in summary['steps']:
        if not r['ok']:
            lines.append(f'{r["name"]:32s}  FAILED: {r["error"].splitlines()[-1][:80]}')
            continue
        mfu = None if r['mfu'] is None else f'{100 * r["mfu"]:.1f}%'
        lines.append(f'{r["name"]:32s}{r["dtype"]:>10s}{r["s_per_step"]:9.3f}'
                     f'{r["images_per_s"]:9.0f}{fmt(r["tflop_per_step"], ".2f", 8)}'
                     f'{fmt(mfu, "s", 7)}{fmt(r["peak_memory_gib"], ".1f", 10)}')
    fm = summary['fashion_mnist']
    lines.append('')
    if fm.get('ok'):
        lines.append(f'Fashion-MNIST class 0, {fm["epochs"]} epochs ({fm["steps"]} steps, '
                     f'{fm["seconds"]:.0f} s, {fm["compute_dtype"]}): '
                     f'AUROC {100 * fm["auroc"]:.2f} '
                     f'(sim {100 * fm["auroc_sim"]:.2f}, binary {100 * fm["auroc_binary"]:.2f}; '
                     f'untrained {100 * fm["auroc_untrained"]:.2f}, pixel kNN '
                     f'{100 * fm["auroc_pixel_knn"]:.2f})')
    else:
        lines.append(f'Fashion-MNIST: {fm.get("note") or "FAILED: " + fm["error"][-200:]}')
    for m in summary['memory']:
        text = m['line'] if m['ok'] else 'FAILED: ' + m['line'][-200:]
        lines.append(f'memory {m["dtype"]}: {text}')
    return '\n'.join(lines) + '\n'


def main():
    out_dir = os.environ.get('OUT') or os.path.join(ROOT, 'runs', 'device_check')
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    deadline = t0 + BUDGET_S
    summary = dict(tiny=TINY, env=stage_env())
    print(f'a  {summary["env"]["device_count"]} x {summary["env"]["device_kind"]}', flush=True)
    summary['tests'] = stage_tests(summary['env'], out_dir)
    print(f'b  tests: {summary["tests"]["summary"]}', flush=True)
    # The remaining stages share what is left, the memory analysis last (compiles only).
    summary['steps'] = stage_steps(summary['env'], out_dir, deadline - (60 if TINY else 220))
    print('c  steps timed', flush=True)
    summary['fashion_mnist'] = stage_fashion_mnist(summary['env'], out_dir,
                                                   deadline - (30 if TINY else 120),
                                                   summary['steps'])
    print('d  Fashion-MNIST', 'done' if summary['fashion_mnist'].get('ok') else 'not run',
          flush=True)
    summary['memory'] = stage_memory(deadline)
    summary['seconds'] = time.time() - t0
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    text = report(summary)
    with open(os.path.join(out_dir, 'summary.txt'), 'w') as f:
        f.write(text)
    print(text + f'written to {out_dir}/summary.{{json,txt}}', flush=True)
    ok = summary['tests']['ok'] and all(r['ok'] for r in summary['steps'] + summary['memory'])
    return 0 if ok and summary['fashion_mnist'].get('ok') is not False else 1


if __name__ == '__main__':
    sys.exit(main())
