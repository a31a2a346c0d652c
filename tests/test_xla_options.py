"""XLA's process-wide options: where --compilation_cache puts the cache, that a launch.py
run writes its compiled steps there, and config.deterministic's XLA flag."""
import pytest
import os

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


@pytest.mark.slow
def test_a_run_writes_its_compiled_steps_to_the_cache_and_a_rerun_reads_them(tmp_path):
    cache = tmp_path / 'xla'
    env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
    env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    args = ('--config=configs/digits.py', '--mode=train', '--config.data.normal_class=1',
            '--config.optim.num_epochs=1', '--config.progress_bar=False',
            f'--compilation_cache={cache}')
    r = children.launch(*args, f'--workdir={tmp_path / "a"}', env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = set(os.listdir(cache))
    assert entries, 'nothing was cached'
    # The same run in another workdir compiles nothing new: every entry is reused.
    r = children.launch(*args, f'--workdir={tmp_path / "b"}', env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(os.listdir(cache)) == entries


def test_deterministic_adds_xla_s_flag_once_and_keeps_the_user_s():
    flag = '--xla_gpu_deterministic_ops=true'
    assert xla_options.xla_flags(False, '--xla_dump_to=/d') == '--xla_dump_to=/d'
    assert xla_options.xla_flags(True, '') == flag
    assert xla_options.xla_flags(True, '--xla_dump_to=/d') == f'--xla_dump_to=/d {flag}'
    assert xla_options.xla_flags(True, flag) == flag  # not twice


@pytest.mark.slow
def test_a_deterministic_run_starts_xla_with_the_flag(tmp_path):
    """launch.py sets the flag before the backend starts: XLA accepts it on a CPU (it is
    one of its debug options) and the run trains and writes its config with the switch."""
    r = children.launch('--config=configs/digits.py', '--mode=train',
                        '--config.data.normal_class=1', '--config.optim.num_epochs=1',
                        '--config.progress_bar=False', '--config.deterministic=True',
                        f'--workdir={tmp_path}')
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"deterministic": true' in (tmp_path / 'config.json').read_text()
