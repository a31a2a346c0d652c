"""A trained model outside this package: export.py writes it with jax.export,
exported.py loads and scores it with jax and numpy alone."""
