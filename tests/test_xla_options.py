"""XLA's process-wide options: where --compilation_cache puts the cache, that a launch.py
run writes its compiled steps there, and config.deterministic's XLA flag."""
import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import pytest

from unode_jax.runtime import xla_options

import children


def test_where_the_cache_goes():
    home = {'XDG_CACHE_HOME': '/c'}
    # auto: under the user's cache folder on an accelerator, off on a CPU.
    assert xla_options.cache_dir('auto', 'gpu', home) == '/c/unode_jax/xla'
    assert xla_options.cache_dir('auto', 'tpu', home) == '/c/unode_jax/xla'
    assert xla_options.cache_dir('auto', 'cpu', home) is None
    assert xla_options.cache_dir('auto', 'gpu', {}) == os.path.join(
        os.path.expanduser('~'), '.cache', 'unode_jax', 'xla')
    # A folder is used on every backend; none turns it off.
    assert xla_options.cache_dir('/x/y', 'cpu', home) == '/x/y'
    assert xla_options.cache_dir('none', 'gpu', home) is None
    # JAX's own variable wins over the flag.
    env = dict(home, JAX_COMPILATION_CACHE_DIR='/j')
    assert xla_options.cache_dir('none', 'gpu', env) == '/j'
    assert xla_options.cache_dir('auto', 'cpu', env) == '/j'


# JAX logs each persistent-cache lookup at debug level (jax/_src/compiler.py,
# log_persistent_cache_hit / log_persistent_cache_miss): a miss is followed by XLA's compile
# (and the write of the entry), a hit loads the stored executable instead. A lookup happens
# only with the cache on: a run with it off logs neither.
HIT = re.compile(r"Persistent compilation cache hit for '[^']*' with key '([^']*)'")
MISS = re.compile(r"PERSISTENT COMPILATION CACHE MISS for '[^']*' with key '([^']*)'")


@pytest.mark.slow
def test_a_run_writes_its_compiled_steps_to_the_cache_and_a_rerun_reads_them(tmp_path):
    cache = tmp_path / 'xla'
    env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
    env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
               JAX_DEBUG_LOG_MODULES='jax._src.compiler')  # The hit and miss lines.
    args = ('--config=configs/digits.py', '--mode=train', '--config.data.normal_class=1',
            '--config.optim.num_epochs=1', '--config.progress_bar=False',
            f'--compilation_cache={cache}')
    r = children.launch(*args, f'--workdir={tmp_path / "a"}', env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    # The first run finds an empty cache: it compiles its programs (the train step among
    # them, ~90 on a CPU) and writes each one's entry, <key>-cache (beside them, a GPU's
    # XLA keeps its autotuning results in a folder of its own).
    compiled = set(MISS.findall(r.stderr))
    assert compiled, 'no cache lookup logged: the cache was off'
    entries = {e for e in os.listdir(cache) if e.endswith('-cache')}
    assert entries == {f'{key}-cache' for key in compiled}
    # The same run in another workdir reads every entry and compiles nothing itself (a
    # rerun that recompiled would log misses, and write the same entries again: the
    # folder alone cannot tell).
    r = children.launch(*args, f'--workdir={tmp_path / "b"}', env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert MISS.findall(r.stderr) == []
    assert set(HIT.findall(r.stderr)) == compiled
    assert {e for e in os.listdir(cache) if e.endswith('-cache')} == entries


def test_deterministic_adds_xla_s_flag_once_and_keeps_the_user_s():
    flag = '--xla_gpu_deterministic_ops=true'
    cpu = ' '.join(xla_options.CPU_FLAGS)
    assert xla_options.xla_flags(False, '--xla_dump_to=/d') == f'--xla_dump_to=/d {cpu}'
    assert xla_options.xla_flags(True, '') == f'{cpu} {flag}'
    assert xla_options.xla_flags(True, '--xla_dump_to=/d') == f'--xla_dump_to=/d {cpu} {flag}'
    assert xla_options.xla_flags(True, flag) == f'{flag} {cpu}'  # not twice


def test_the_cpu_library_flags_yield_to_the_user_s_own():
    """A flag the user sets (any value, empty included) is theirs; others are added once."""
    assert xla_options.CPU_FLAGS == ('--xla_cpu_experimental_ynn_fusion_type=individual_dot',)
    for own in ('--xla_cpu_experimental_ynn_fusion_type=',
                '--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution'):
        assert xla_options.xla_flags(False, f'--a=1 {own}') == f'--a=1 {own}'
    once = xla_options.xla_flags(False, '')
    assert xla_options.xla_flags(False, once) == once
    assert xla_options.with_flags(' --a=1  --b ', ('--b=2', '--c=3')) == '--a=1  --b --c=3'


@pytest.mark.cpu_only('XLA:CPU\'s own option')
def test_the_api_sets_the_cpu_flags_before_the_backend_starts():
    """`from unode_jax import Detector` in a fresh interpreter: XLA_FLAGS then hold the
    project's CPU flags beside the user's own, and XLA compiles with them (a 32-channel
    convolution stays XLA's, jaxlib's default would hand it to YNNPACK)."""
    code = ('import os\n'
            'from unode_jax import Detector\n'
            'import jax, jax.numpy as jnp\n'
            'x, w = jnp.ones((8, 8, 8, 32)), jnp.ones((3, 3, 32, 32))\n'
            'f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", '
            'dimension_numbers=("NHWC", "HWIO", "NHWC"))\n'
            'entry = jax.jit(f).lower(x, w).compile().as_text().split("\\nENTRY ")[1]\n'
            'print(os.environ["XLA_FLAGS"]); print(entry.count(" convolution("))\n')
    env = dict(os.environ, XLA_FLAGS='--xla_cpu_enable_fast_math=false')
    r = children.run([sys.executable, '-c', code], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split('\n')[:2] == [
        f'--xla_cpu_enable_fast_math=false {" ".join(xla_options.CPU_FLAGS)}', '1']


@pytest.mark.cpu_only('XLA:CPU\'s own option')
def test_the_cpu_flag_sends_convolutions_to_eigen_and_dots_to_ynnpack():
    """What CPU_FLAGS buys, read off the compiled program: with it a convolution stays an
    XLA convolution (Eigen) and a dot becomes a YNNPACK fusion; jaxlib's default hands the
    convolution (32 channels: over YNNPACK's 16-channel cut) to YNNPACK too. Compiler
    options are XLA_FLAGS' names, per compile (enum values spelled in full)."""
    x, w = jnp.ones((8, 8, 8, 32)), jnp.ones((3, 3, 32, 32))

    def f(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return y.reshape(-1, 32) @ w[0, 0]

    def ops(options):
        text = jax.jit(f).lower(x, w).compile(compiler_options=options).as_text()
        entry = text.split('\nENTRY ')[1]  # Not the fused computations' insides.
        return entry.count('"__ynn_fusion"'), entry.count(' convolution(')

    def options(flag):
        name, value = flag.lstrip('-').split('=')
        return {name: ','.join(f'LIBRARY_FUSION_TYPE_{t.upper()}' for t in value.split(','))}

    assert ops(options(xla_options.CPU_FLAGS[0])) == (1, 1)
    assert ops(options('--xla_cpu_experimental_ynn_fusion_type=individual_dot,'
                       'individual_convolution')) == (2, 0)


def debug_options(path):
    """XLA's dump of the options a module was compiled with (those not at their default),
    one `name: value` a line (text protobuf) -> {name: value}."""
    return dict(line.split(': ', 1) for line in path.read_text().splitlines())


@pytest.mark.slow
def test_a_deterministic_run_starts_xla_with_the_flag(tmp_path):
    """launch.py sets the flag before the backend starts, and keeps the user's XLA_FLAGS:
    with --xla_dump_to in them, XLA writes the options it compiled each module with
    (<module>.debug_options, those off their default); the train step's has the user's
    flags and the deterministic one. Set after the backend started, XLA would never see the
    flag (it reads XLA_FLAGS once): the dump would lack it."""
    dump = tmp_path / 'dump'
    # Only the pmapped programs (the train step is one): the full dump is ~60 MB.
    user_flags = (f'{os.environ.get("XLA_FLAGS", "")} --xla_dump_to={dump} '
                  '--xla_dump_hlo_module_re=jit__fun')
    r = children.launch('--config=configs/digits.py', '--mode=train',
                        '--config.data.normal_class=1', '--config.optim.num_epochs=1',
                        '--config.progress_bar=False', '--config.deterministic=True',
                        f'--workdir={tmp_path / "run"}', env=dict(os.environ, XLA_FLAGS=user_flags))
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"deterministic": true' in (tmp_path / 'run' / 'config.json').read_text()
    # The train step: the module whose HLO names train_step (its ops' metadata).
    steps = [p for p in dump.glob('*.before_optimizations.txt') if 'train_step' in p.read_text()]
    # (Nothing dumped: the user's --xla_dump_to was dropped.)
    assert len(steps) == 1, sorted(os.listdir(dump)) if dump.exists() else 'nothing dumped'
    options = debug_options(dump / steps[0].name.replace('.before_optimizations.txt',
                                                         '.debug_options'))
    assert options['xla_gpu_deterministic_ops'] == 'true'
    assert options['xla_cpu_experimental_ynn_fusion_type'] == 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
    assert options['xla_dump_to'] == f'"{dump}"'  # The user's own flags, kept.
    assert options['xla_dump_hlo_module_re'] == '"jit__fun"'
    shutil.rmtree(dump)  # ~30 MB of HLO text and LLVM IR.
