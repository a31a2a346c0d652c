"""Test set-up: 4 fake CPU devices, the project's XLA:CPU flags and a session-wide XLA
compilation cache, set before JAX starts.

On a machine with a GPU or TPU the suite still runs on the CPU (JAX_PLATFORMS=cpu unless
set). With JAX_PLATFORMS=cuda (or tpu) it runs on the accelerator; then a test marked
`devices(n)` is skipped where there are fewer than n devices, and one marked
`cpu_only(why)` (it checks the CPU backend itself, or a bit-for-bit CPU guarantee) is
skipped, each with its reason.
"""
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the session, this process's and the launch.py
# children's (they inherit the environment): a program many tests compile (the tiny
# model's train step, its scoring passes) compiles once and is loaded after. Removed at the
# session's end; a JAX_COMPILATION_CACHE_DIR of the user's own is used and kept.
SESSION_XLA_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    SESSION_XLA_CACHE = tempfile.mkdtemp(prefix="unode_jax_tests_xla_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = SESSION_XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

from unode_jax.runtime import xla_options  # noqa: E402

xla_options.set_flags()  # XLA:CPU's library choice, as launch.py makes it (the user's wins).

import pytest  # noqa: E402


def pytest_unconfigure(config):
    if SESSION_XLA_CACHE:
        shutil.rmtree(SESSION_XLA_CACHE, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line('markers', 'devices(n): needs n devices (the CPU run has 4 fake '
                                       'ones; skipped where there are fewer)')
    config.addinivalue_line('markers', 'cpu_only(why): checks the CPU backend itself or a CPU '
                                       'guarantee (skipped on an accelerator)')
    config.addinivalue_line('markers', 'slow: over ~4 s on 2 cores (end-to-end runs, child '
                                       'processes); pytest -m "not slow" is the fast tier')


def pytest_collection_modifyitems(config, items):
    import jax
    backend, n = jax.default_backend(), jax.device_count()
    for item in items:
        need = item.get_closest_marker('devices')
        if need and n < need.args[0]:
            item.add_marker(pytest.mark.skip(
                reason=f'needs {need.args[0]} devices; this {backend} run has {n} (on a CPU, '
                       'tests/conftest.py makes 4)'))
        cpu = item.get_closest_marker('cpu_only')
        if cpu and backend != 'cpu':
            item.add_marker(pytest.mark.skip(reason=f'CPU only on {backend}: {cpu.args[0]}'))


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data, with tfds 4.9.10's batched-read bug patched (tfds_mock.py)."""
    from tests.tfds_mock import patched_mock_data
    return patched_mock_data(monkeypatch)


@pytest.fixture(autouse=True)
def _array_cache(tmp_path_factory, monkeypatch):
    """Prepared-array cache in the session's temp folder, never the user's ~/.cache."""
    monkeypatch.setenv('UNODE_JAX_CACHE', str(tmp_path_factory.getbasetemp() / 'array_cache'))


@pytest.fixture(scope='module', autouse=True)
def _free_compiled_programs():
    """After each test module, drop JAX's compiled programs. Each XLA:CPU executable holds
    memory mappings of its own (a tiny training run adds ~1,200); the suite compiles
    hundreds in one process and would pass the kernel's vm.max_map_count (65,530), at
    which an XLA compile segfaults (seen at test_train on this suite's 660 tests)."""
    yield
    import gc

    import jax
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope='session')
def trained_digits3(tmp_path_factory):
    """A finished tiny one-class run (class 3 of digits at 16 px, uniform weights): its
    workdir, shared by the tests that read a trained workdir back."""
    from tests.tiny_config import tiny_config
    from unode_jax.run import run
    workdir = tmp_path_factory.mktemp('trained_digits3')
    run(tiny_config(**{'negatives.transforms': ('rotation', 'cutout', 'mixup'),
                       'negatives.weights': 'uniform', 'data.normal_class': 3}), str(workdir))
    return workdir


@pytest.fixture
def no_network(monkeypatch):
    """No network, and a record of every try: each connection attempt is noted as
    (address, timeout) and refused at once, each tfds download_and_prepare noted and refused.
    'Fails fast' is then checked without a clock: no download was started, and a probe of
    the network is one connection with a short timeout."""
    import errno
    import socket
    import types

    import tensorflow_datasets as tfds

    tried = types.SimpleNamespace(connections=[], downloads=[])

    def connect(sock, address):
        tried.connections.append((address, sock.gettimeout()))
        raise OSError(errno.ENETUNREACH, 'network unreachable (the offline fixture)')

    def download_and_prepare(builder, *args, **kwargs):
        tried.downloads.append(builder.info.full_name)
        raise AssertionError(f'download_and_prepare({builder.info.full_name}) was called')

    monkeypatch.setattr(socket.socket, 'connect', connect)
    monkeypatch.setattr(socket.socket, 'connect_ex', connect)
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', download_and_prepare)
    return tried
