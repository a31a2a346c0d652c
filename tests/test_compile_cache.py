"""JAX's persistent compilation cache: where --compilation_cache puts it, and that a
launch.py run writes its compiled steps there."""
import os

from unode_jax import compile_cache

import children


def test_where_the_cache_goes():
    home = {'XDG_CACHE_HOME': '/c'}
    # auto: under the user's cache folder on an accelerator, off on a CPU.
    assert compile_cache.cache_dir('auto', 'gpu', home) == '/c/unode_jax/xla'
    assert compile_cache.cache_dir('auto', 'tpu', home) == '/c/unode_jax/xla'
    assert compile_cache.cache_dir('auto', 'cpu', home) is None
    assert compile_cache.cache_dir('auto', 'gpu', {}) == os.path.join(
        os.path.expanduser('~'), '.cache', 'unode_jax', 'xla')
    # A folder is used on every backend; none turns it off.
    assert compile_cache.cache_dir('/x/y', 'cpu', home) == '/x/y'
    assert compile_cache.cache_dir('none', 'gpu', home) is None
    # JAX's own variable wins over the flag.
    env = dict(home, JAX_COMPILATION_CACHE_DIR='/j')
    assert compile_cache.cache_dir('none', 'gpu', env) == '/j'
    assert compile_cache.cache_dir('auto', 'cpu', env) == '/j'


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
