"""Where one training step's time goes: XLA's per-op trace of the compiled step, by part.

  python benchmarks/profile_step.py --config=configs/digits.py     # the CPU recipe's step
  python benchmarks/profile_step.py --config=configs/digits.py --variant=ynn_off
  python benchmarks/profile_step.py --authors                       # train_step.py's default
  python benchmarks/profile_step.py --config=configs/digits.py --json_out=/tmp/profile.json

Compiles the pmapped training step of a config on one device (or, with --authors, the
authors' step that benchmarks/train_step.py times: CIFAR ResNet-18, 32 px, batch 32) with
XLA's per-op trace on (`xla_cpu_enable_xprof_traceme`), runs it under `jax.profiler`
and adds up each HLO op's time. Each op is placed by its metadata (the jax named scope
and Flax module path that made it) and its kind:

  part    views + negatives | stem / layerN convolutions | BatchNorm | heads | loss and
          other | optimizer; forward or backward (ops under transpose(jvp(...)))
  kind    YNNPACK (a __ynn_fusion), oneDNN, Eigen convolution, dot, transpose or copy,
          fused elementwise/reduce (XLA's own loops), other

--steps, --warmup, --model, --image_size, --batch, --dtype and --stem are train_step.py's
flags. Ops can overlap on the thread pool, so the sum of op times can differ from the step's
wall time (both printed); an op XLA hands to Eigen (its convolutions) is traced as its
dispatch only, so with convolutions on Eigen (this project's CPU flags) most of their time
shows as wall time outside the traced ops, and --variant=default (YNNPACK's convolutions,
traced whole) gives the finer picture. --variant takes train_step.py's XLA:CPU option sets.
"""
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax._src.lib import _profile_data  # noqa: E402

import train_step as bench  # noqa: E402
from unode_jax.augment import weights as weights_lib  # noqa: E402
from unode_jax.training import devices as devices_lib, optim, train as train_lib  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (its training step).')
flags.DEFINE_bool('authors', False, 'Profile benchmarks/train_step.py\'s step (the authors\' '
                  'work at --model, --image_size, --batch) instead of --config\'s.')
flags.DEFINE_string('variant', 'ynn_dot', 'An XLA:CPU option set of benchmarks/train_step.py '
                    '(ynn_dot: what launch.py runs with; default: jaxlib\'s own).')
flags.DEFINE_integer('top', 15, 'How many single ops to list.')
flags.DEFINE_string('profile_json_out', None, 'Write the breakdown to this JSON file.')

CONTAINERS = ('while', 'conditional', 'call')  # Their time is their ops' time.
LAYER = re.compile(r'UNODEModel\)*/(?:encoder/)?([A-Za-z_0-9]+)(?:/([A-Za-z_0-9]+))?')


def instructions(hlo_text):
    """name -> (opcode, op_name, fusion kind, the fused computation's opcodes, shape) of every
    instruction in an HLO module's text. A fusion without metadata of its own takes its fused
    computation's (the root's first)."""
    out, calls, current = {}, {}, None
    computation_names, computation_ops = collections.defaultdict(list), collections.defaultdict(set)
    for line in hlo_text.splitlines():
        header = re.match(r'(?:ENTRY\s+)?%([\w.\-]+) .*\{\s*$', line)
        if header and not line.startswith(' '):
            current = header.group(1)
            continue
        m = re.match(r'\s*(ROOT\s+)?%([\w.\-]+) = (.*)$', line)
        if not m:
            continue
        rest = m.group(3)
        if rest.startswith('('):  # A tuple type: skip to its closing parenthesis.
            depth = 0
            for i, ch in enumerate(rest):
                depth += {'(': 1, ')': -1}.get(ch, 0)
                if depth == 0:
                    rest = rest[i + 1:]
                    break
        op = re.search(r'([a-z][\w\-]*)\(', rest)
        op_name = re.search(r'op_name="([^"]*)"', line)
        op_name = op_name.group(1) if op_name else ''
        kind = re.search(r'"kind":"(__\w+)"', line)
        called = re.search(r'calls=%([\w.\-]+)', line)
        opcode = op.group(1) if op else '?'
        shape = rest.split(' ')[0] if not m.group(3).startswith('(') else 'tuple'
        out[m.group(2)] = (opcode, op_name, kind.group(1) if kind else None, shape)
        if current:
            computation_ops[current].add(opcode)
        if called:
            calls[m.group(2)] = called.group(1)
        if op_name and current:
            names = computation_names[current]
            names.insert(0, op_name) if m.group(1) else names.append(op_name)
    out = {name: (opcode, op_name, kind, frozenset(), shape)
           for name, (opcode, op_name, kind, shape) in out.items()}
    for name, computation in calls.items():
        opcode, op_name, kind, _, shape = out[name]
        if not op_name and computation_names[computation]:
            op_name = computation_names[computation][0]
        out[name] = (opcode, op_name, kind, frozenset(computation_ops[computation]), shape)
    return out


def kind_of(opcode, fusion_kind, inner=frozenset()):
    if fusion_kind:
        library = 'YNNPACK' if fusion_kind == '__ynn_fusion' else fusion_kind.strip('_')
        what = ('convolution' if 'convolution' in inner else 'dot' if 'dot' in inner
                else 'elementwise/reduce')
        return f'{library} {what}'
    if opcode == 'convolution':
        return 'Eigen convolution'
    if opcode == 'dot':
        return 'dot'
    if opcode in ('transpose', 'copy'):
        return 'transpose or copy'
    if opcode == 'fusion':
        return 'fused elementwise/reduce'
    return 'other'


def part_of(op_name, inner=frozenset(), shape=''):
    """(part, layer, direction) of an op from its metadata (XLA keeps none on the weight
    gradients' convolutions it hands to a library: those are named by their shape)."""
    if not op_name and 'convolution' in inner:
        return 'convolutions, weight gradients', shape, 'backward'
    if not op_name:
        return 'no metadata (copies, layout)', '', 'forward'
    direction = 'backward' if 'transpose(jvp' in op_name else 'forward'
    if 'views_and_negatives' in op_name:
        return 'views + negatives', '', 'forward'
    if 'optimizer' in op_name:
        return 'optimizer', '', 'update'
    m = LAYER.search(op_name)
    if not m:
        return 'loss and other', '', direction
    top, sub = m.group(1), m.group(2) or ''
    if top in ('proj_hidden', 'proj_out', 'head'):
        return 'heads', top, direction
    if top in ('conv1', 'bn1'):  # The stem.
        top, sub = 'stem', top
    layer = f'{top}/{sub}'.rstrip('/')
    if 'bn' in sub:
        return 'BatchNorm', layer, direction
    if 'conv' in sub:
        return f'convolutions {top.split("_")[0]}', layer, direction
    return 'loss and other', layer, direction


def trace_events(trace_dir):
    """(name, duration in s) of every event on the host's threads."""
    path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))[-1]
    data = _profile_data.ProfileData.from_file(path)
    for plane in data.planes:
        if plane.name != '/host:CPU':
            continue
        for line in plane.lines:
            for event in line.events:
                yield event.name, event.duration_ns * 1e-9


def compile_step(config, options):
    """(blocking step fn, compiled) for config's pmapped step on one device."""
    b, s = config.batch_size, config.data.image_size
    devices = jax.local_devices()[:1]
    images = np.random.default_rng(0).integers(0, 256, (max(5 * b, 64), s, s, 3), np.uint8)
    state = train_lib.create_train_state(jax.random.key(0), config, s, train_lib.AXIS)
    state = state.replace(opt_state=optim.set_steps_per_epoch(state.opt_state, len(images) // b))
    n_neg = len(config.negatives.transforms)  # AutoAugOOD's weights: uniform stand-ins.
    weights = weights_lib.negative_weights(config)
    if weights is None:
        weights = np.full(n_neg, 1 / n_neg, np.float32)
    batch = devices_lib.replicate(train_lib.device_batch(
        images, np.ones(len(images), np.int32), weights, images[:1], n_valid=len(images)),
        devices)
    holder = [devices_lib.replicate(state, devices)]
    compiled = train_lib.make_p_train_step(config, devices).lower(holder[0], batch).compile(
        compiler_options=dict(options, xla_cpu_enable_xprof_traceme=True))

    def step():
        holder[0], m = compiled(holder[0], batch)
        jax.block_until_ready((holder[0], m))

    return step, compiled


def profile(step, compiled, steps, warmup=2):
    """The per-op breakdown of `steps` runs of step (seconds per step)."""
    for _ in range(warmup):
        step()
    info = instructions(compiled.as_text())
    walls = []
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t0)
        jax.profiler.stop_trace()
        events = list(trace_events(trace_dir))
    ops = collections.defaultdict(float)
    for name, seconds in events:
        if name in info and info[name][0] not in CONTAINERS:
            ops[name] += seconds / steps
    by = collections.defaultdict(lambda: collections.defaultdict(float))
    for name, seconds in ops.items():
        opcode, op_name, fusion_kind, inner, shape = info[name]
        part, layer, direction = part_of(op_name, inner, shape)
        kind = kind_of(opcode, fusion_kind, inner)
        by['part'][part] += seconds
        by['kind'][kind] += seconds
        by['part_kind'][f'{part} | {kind}'] += seconds
        by['direction'][direction] += seconds
        if layer:
            by['layer'][f'{layer} {direction} | {kind}'] += seconds
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:FLAGS.top]
    return dict(wall_s=statistics.median(walls), ops_s=sum(ops.values()),
                **{k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in by.items()},
                top=[dict(name=n, s=t, opcode=info[n][0], shape=info[n][4],
                          kind=kind_of(info[n][0], info[n][2], info[n][3]),
                          op_name=info[n][1]) for n, t in top])


def print_profile(result, title):
    total = result['ops_s']
    print(f'\n{title}\nstep wall time {result["wall_s"] * 1e3:.1f} ms (median); '
          f'sum of op times {total * 1e3:.1f} ms')
    if result['wall_s'] > total:
        print(f'   {(result["wall_s"] - total) * 1e3:.1f} ms of the wall time are in no traced op: '
              'Eigen runs an XLA convolution on its own threads after its op returns (the op is '
              'traced as its dispatch), and threads wait')
    for key, heading in (('part', 'by part'), ('kind', 'by kind'), ('direction', 'by pass'),
                         ('part_kind', 'by part and kind')):
        print(f'-- {heading}')
        for name, seconds in result[key].items():
            if seconds >= 0.002 * total:
                print(f'   {name:58s}{seconds * 1e3:8.2f} ms {100 * seconds / total:5.1f}%')
    print(f'-- the {len(result["top"])} slowest ops')
    for op in result['top']:
        print(f'   {op["name"][:24]:24s}{op["kind"][:26]:27s}{op["s"] * 1e3:6.2f} ms  '
              f'{op["shape"][:22]:23s}{op["op_name"][-50:]}')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)
    if FLAGS.variant not in bench.XLA_VARIANTS:
        raise app.UsageError(f'--variant: one of {", ".join(bench.XLA_VARIANTS)}')
    if FLAGS.authors:
        config = bench.authors_config(FLAGS.model, FLAGS.batch, FLAGS.image_size, FLAGS.dtype,
                                      FLAGS.stem)
        title = f'the authors\' step, {FLAGS.model}, {FLAGS.image_size} px, batch {FLAGS.batch}'
    elif FLAGS.config is not None:
        config = FLAGS.config
        title = (f'{config.model.name}, {config.data.image_size} px, batch '
                 f'{config.batch_size} (the config\'s own step)')
    else:
        raise app.UsageError('give --config=configs/NAME.py or --authors')
    title += f'; XLA option set {FLAGS.variant}, {jax.default_backend()}'
    step, compiled = compile_step(config, bench.XLA_VARIANTS[FLAGS.variant])
    result = profile(step, compiled, FLAGS.steps, FLAGS.warmup)
    print_profile(result, title)
    if FLAGS.profile_json_out:
        with open(FLAGS.profile_json_out, 'w') as fh:
            json.dump(dict(title=title, **result), fh, indent=2)
        print(f'wrote {FLAGS.profile_json_out}')


if __name__ == '__main__':
    app.run(main)
