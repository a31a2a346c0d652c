"""Test set-up: 4 fake CPU devices, set before JAX starts."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data, with tfds 4.9.10's batched-read bug patched (tfds_mock.py)."""
    from tests.tfds_mock import patched_mock_data
    return patched_mock_data(monkeypatch)


@pytest.fixture(autouse=True)
def _array_cache(tmp_path_factory, monkeypatch):
    """Prepared-array cache in the session's temp folder, never the user's ~/.cache."""
    monkeypatch.setenv('UNODE_JAX_CACHE', str(tmp_path_factory.getbasetemp() / 'array_cache'))


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
