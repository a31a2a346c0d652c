"""The benchmark scripts run (tiny sizes; their timings are not checked, only that they
measure the configuration asked for and write their summary)."""
import functools
import importlib.util
import json
import os
import sys

import pytest

from tests import children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def train_step_bench():
    """benchmarks/train_step.py as a module, loaded once (it defines absl flags)."""
    spec = importlib.util.spec_from_file_location(
        'train_step_bench', os.path.join(ROOT, 'benchmarks/train_step.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_train_step_benchmark_times_the_asked_model_dtype_and_stem(tmp_path):
    out = tmp_path / 'step.json'
    r = children.run([sys.executable, os.path.join(ROOT, 'benchmarks/train_step.py'),
                      '--model=resnet18', '--stem=cifar', '--dtype=bfloat16', '--batch=2',
                      '--image_size=16', '--steps=1', '--warmup=0', '--num_images=8',
                      '--notorch', f'--json_out={out}', '--xla_variants=default,ynn_off'])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (res['model'], res['stem'], res['dtype']) == ('resnet18', 'cifar', 'bfloat16')
    assert 'stem cifar, bfloat16' in r.stdout
    assert res['ours']['full']['flops'] > 0 and res['ours']['full']['loss_finite']
    # Each XLA option set is compiled and timed in the same rounds; the first is 'ours'.
    variants = res['xla_variants']
    assert list(variants) == ['default', 'ynn_off']
    assert variants['ynn_off']['options'] == {'xla_cpu_experimental_ynn_fusion_type': ''}
    assert variants['default']['full']['times'] == res['ours']['full']['times']
    assert all(len(variants[v][p]['times']) == 1 for v in variants for p in ('full', 'model'))
    assert 'ynn_off' in r.stdout.split('XLA:CPU option sets')[1]


def test_train_step_benchmark_refuses_an_unknown_xla_variant():
    r = children.run([sys.executable, os.path.join(ROOT, 'benchmarks/train_step.py'),
                      '--xla_variants=default,fastest', '--notorch'])
    assert r.returncode != 0 and "unknown ['fastest']" in r.stderr


def test_the_torch_baseline_is_our_network_at_each_width():
    """The torch restatement has our encoder's and heads' parameter count at both widths
    (BatchNorm's running statistics are buffers there, batch_stats here)."""
    torch = pytest.importorskip('torch')
    import jax
    import numpy as np
    bench = train_step_bench()
    from unode_jax.models import create_model
    for name, width in bench.TORCH_WIDTHS.items():
        variables = jax.eval_shape(lambda: create_model(name).init(
            jax.random.key(0), jax.numpy.zeros((1, 16, 16, 3)), train=False))
        ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
        net = bench.torch_model(width)
        assert sum(p.numel() for p in net.parameters()) == ours, name
        assert isinstance(net(torch.zeros(2, 3, 16, 16))[0], torch.Tensor)


@pytest.mark.slow
def test_profile_step_places_every_op_of_the_step(tmp_path):
    """benchmarks/profile_step.py on a tiny step: the parts the breakdown names are there,
    each op placed once (the parts add up to the ops' sum)."""
    out = tmp_path / 'profile.json'
    r = children.run([sys.executable, os.path.join(ROOT, 'benchmarks/profile_step.py'),
                      f'--config={ROOT}/configs/digits.py', '--config.model.name=tiny',
                      '--config.batch_size=2', '--steps=2', '--warmup=1',
                      f'--profile_json_out={out}'], cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {'views + negatives', 'BatchNorm', 'optimizer', 'convolutions layer1'} <= set(
        res['part'])
    assert res['ops_s'] > 0 and res['wall_s'] > 0
    for key in ('part', 'kind', 'direction', 'part_kind'):
        assert abs(sum(res[key].values()) - res['ops_s']) < 1e-9, key
    assert 'by part' in r.stdout and 'slowest ops' in r.stdout


def test_train_step_table_prints_without_flops(capsys):
    """A backend whose cost analysis gives no FLOPs: '-' in the table, no crash."""
    bench = train_step_bench()

    class NoCost:
        def cost_analysis(self):
            raise NotImplementedError('no cost analysis here')

    class Cost:
        def __init__(self, ca):
            self.ca = ca

        def cost_analysis(self):
            return self.ca
    assert bench.xla_flops(NoCost()) is None
    assert bench.xla_flops(Cost({})) is None and bench.xla_flops(Cost({'flops': 0.0})) is None
    assert bench.xla_flops(Cost({'flops': 2.5e9})) == 2.5e9
    assert bench.xla_flops(Cost([{'flops': 2.5e9}])) == 2.5e9  # older jax: one dict a program
    times = {'full': [0.5, 0.7], 'model': [0.3, 0.2, 0.22], 'views': [0.1]}
    ours = {part: dict(compile_s=compile_s, flops=None, **bench.summarize(times[part], 4, None))
            for part, compile_s in (('full', 12.34), ('model', 5.0), ('views', 0.7))}
    bench.print_table(ours, None, 4, 16)
    # Batch 4: median s/step 0.6, 0.22, 0.1 (the mean of model's would be 0.24) -> 4 / median
    # = 6.7, 18.2, 40 images/s; the fastest step 0.5, 0.2, 0.1 -> 8, 20, 40. No torch run:
    # '-' in its two columns; no FLOPs: '-' for the count and the rate.
    dash = '-' * 72
    assert capsys.readouterr().out.splitlines() == [
        '',
        'UNODE train step: batch 4 inliers = 16 rows of 16x16; median of the timed steps '
        '("best": the fastest step, the least disturbed by other load)',
        ' ' * 32 + '    ours (JAX)   torch eager  ours/torch',
        dash,
        'full step s/step                         0.600             -           -',
        'full step images/s                         6.7             -           -',
        'full step images/s best                    8.0             -           -',
        'model only s/step                        0.220             -           -',
        'model only images/s                       18.2             -           -',
        'model only images/s best                  20.0             -           -',
        'views only s/step                        0.100             -           -',
        'views only images/s                       40.0             -           -',
        'views only images/s best                  40.0             -           -',
        'full step spread (min-max s)         0.50-0.70             -',
        dash,
        'ours full step   compile  12.3 s   XLA FLOPs/step         - G   achieved        - '
        'GFLOP/s',
        'ours model only  compile   5.0 s   XLA FLOPs/step         - G   achieved        - '
        'GFLOP/s',
        'ours views only  compile   0.7 s   XLA FLOPs/step         - G   achieved        - '
        'GFLOP/s',
        'ours/torch: ratio of images/s (> 1: ours is faster). Achieved FLOP/s use the median '
        "step; MFU = achieved / the chip's peak. FLOPs are per device.",
    ]


@pytest.mark.slow
def test_flops_benchmark_prints_the_step_s_flops_and_memory():
    r = children.run([sys.executable, os.path.join(ROOT, 'benchmarks/flops.py'),
                      '--config=configs/digits.py', '--memory'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'XLA FLOPs per training step' in r.stdout
    assert 'memory of the step on one cpu device at batch 16 (float32)' in r.stdout, r.stdout


@pytest.mark.slow
def test_device_check_runs_every_stage_and_writes_its_summary(tmp_path):
    """benchmarks/device_check.sh end to end at tiny sizes on the CPU (DEVICE_CHECK_TINY):
    versions, a pytest subset, a timed step, Fashion-MNIST class 0 from idx files, the
    step's memory in both dtypes; summary.{json,txt} in $OUT, exit code 0."""
    from tests.test_idx import write_idx_folder
    write_idx_folder(tmp_path / 'idx', n_train=400, n_test=100, size=28)
    out = tmp_path / 'out'
    r = children.run(['bash', os.path.join(ROOT, 'benchmarks/device_check.sh')],
                     env=dict(os.environ, PYTHON=sys.executable, DEVICE_CHECK_TINY='1',
                              OUT=str(out), DEVICE_CHECK_BUDGET_S='3000',
                              DEVICE_CHECK_FMNIST=str(tmp_path / 'idx')))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['tiny'] and summary['env']['backend'] == 'cpu'
    assert summary['env']['versions']['jax'] and summary['tests']['ok'], summary['tests']
    (step,) = summary['steps']
    assert step['ok'] and step['dtype'] == 'float32' and step['s_per_step'] > 0
    assert step['peak_memory_gib'] is None and step['mfu'] is None  # a CPU reports neither
    fm = summary['fashion_mnist']
    assert fm['ok'] and fm['epochs'] == 1 and fm['compute_dtype'] == 'float32'
    # Class c of the tiny idx files is a bright bar at row 2c: every score separates it.
    assert all(fm[k] > 0.9 for k in ('auroc', 'auroc_untrained', 'auroc_pixel_knn')), fm
    assert [m['dtype'] for m in summary['memory']] == ['float32', 'bfloat16']
    assert all(m['ok'] and 'memory of the step' in m['line'] for m in summary['memory'])
    text = (out / 'summary.txt').read_text()
    assert text.startswith('device check (tiny): ') and 'Fashion-MNIST class 0, 1 epochs' in text


def test_device_check_names_missing_packages_in_one_line(tmp_path):
    """A machine without one of the packages (dm_pix hidden by a sitecustomize that makes
    its import fail) stops before any stage with one line naming it and the way to get it."""
    (tmp_path / 'sitecustomize.py').write_text(
        'import sys\n'
        'class Hide:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name == 'dm_pix':\n"
        '            raise ModuleNotFoundError(name)\n'
        'sys.meta_path.insert(0, Hide())\n')
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(tmp_path),
               OUT=str(tmp_path / 'out'))
    r = children.run(['bash', os.path.join(ROOT, 'benchmarks/device_check.sh')], env=env)
    assert r.returncode == 2 and r.stdout == '', r.stdout[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith('error: missing Python packages: dm_pix; install them with pip')
    assert 'DEVICE_CHECK_WHEELS=DIR' in line and not (tmp_path / 'out').exists()


def test_device_check_sizes_its_fashion_mnist_run_to_the_time_left(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        'device_check', os.path.join(ROOT, 'benchmarks/device_check.py'))
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    monkeypatch.setattr(check, 'TINY', False)
    monkeypatch.delenv('DEVICE_CHECK_FM_EPOCHS', raising=False)
    now = 1000.0
    monkeypatch.setattr(check.time, 'time', lambda: now)
    row = dict(name=check.FM_STEP, ok=True, s_per_step=0.01)  # 3.75 s an epoch
    left = check.FM_RESERVE_S + 10 * 3.75 + 1
    assert check.fm_epochs([row], now + left) == 10
    assert check.fm_epochs([row], now + 10) == 1  # never fewer than one
    assert check.fm_epochs([row], now + 1e6) == 100  # nor more than a hundred
    assert check.fm_epochs([dict(row, ok=False)], now + left) == 1  # no measurement
    monkeypatch.setenv('DEVICE_CHECK_FM_EPOCHS', '7')
    assert check.fm_epochs([row], now + left) == 7
