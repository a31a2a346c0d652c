"""tfds test helpers: a prepared-looking dataset folder; mock_data serves the records."""
import tensorflow_datasets as tfds


def fake_prepared(data_dir, tfds_name):
    """Creates the folder the loader checks; mock_data serves the records."""
    version_dir = data_dir / tfds.builder(tfds_name, data_dir=data_dir).info.full_name
    version_dir.mkdir(parents=True)
    (version_dir / 'dataset_info.json').write_text('{}')


def _unbound_getitems(record_keys, generator, serialized=False):
    assert not serialized
    return [generator[k] for k in record_keys]


def patched_mock_data(monkeypatch):
    """tfds.testing.mock_data with batched reads fixed.

    tfds 4.9.10 bug: mock_data installs its __getitems__ as an unbound partial on a
    MagicMock, so the record keys land in `self` and every batched read raises
    TypeError. The loader needs batched reads (8x faster on real array_record), so
    patch the helper that partial wraps.
    """
    from tensorflow_datasets.testing import mocking
    monkeypatch.setattr(mocking, '_getitems', _unbound_getitems)
    return tfds.testing.mock_data
