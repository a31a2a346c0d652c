"""A trained model outside this package: export.py writes it with jax.export (onnx_export.py
as ONNX; contents.py what both hold, reference.py the drift check's images and scores),
exported.py loads and scores a jax export with jax and numpy alone."""
