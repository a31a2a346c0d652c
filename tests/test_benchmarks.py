"""The benchmark scripts run (tiny sizes; their timings are not checked, only that they
measure the configuration asked for and write their summary)."""
import importlib.util
import json
import os
import sys

from tests import children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_step_benchmark_times_the_asked_model_dtype_and_stem(tmp_path):
    out = tmp_path / 'step.json'
    r = children.run([sys.executable, os.path.join(ROOT, 'benchmarks/train_step.py'),
                      '--model=resnet18', '--stem=cifar', '--dtype=bfloat16', '--batch=2',
                      '--image_size=16', '--steps=1', '--warmup=0', '--num_images=8',
                      '--notorch', f'--json_out={out}'])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (res['model'], res['stem'], res['dtype']) == ('resnet18', 'cifar', 'bfloat16')
    assert 'stem cifar, bfloat16' in r.stdout
    assert res['ours']['full']['flops'] > 0 and res['ours']['full']['loss_finite']


def test_train_step_table_prints_without_flops():
    """A backend whose cost analysis gives no FLOPs: '-' in the table, no crash."""
    spec = importlib.util.spec_from_file_location(
        'train_step_bench', os.path.join(ROOT, 'benchmarks/train_step.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    class NoCost:
        def cost_analysis(self):
            raise NotImplementedError('no cost analysis here')
    assert bench.xla_flops(NoCost()) is None
    ours = {part: dict(compile_s=1.0, flops=None, **bench.summarize([0.5, 0.7], 4, None))
            for part in ('full', 'model', 'views')}
    bench.print_table(ours, None, 4, 16)  # raises if a missing count is formatted


def test_flops_benchmark_prints_the_step_s_flops_and_memory():
    r = children.run([sys.executable, os.path.join(ROOT, 'benchmarks/flops.py'),
                      '--config=configs/digits.py', '--memory'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'XLA FLOPs per training step' in r.stdout
    assert 'memory of the step on one cpu device at batch 16 (float32)' in r.stdout, r.stdout
