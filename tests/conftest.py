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
