"""unode-jax: UNODE novelty detection (CVPR 2024) in JAX/Flax.

`from unode_jax import Detector` (detector.py) is the Python API. It is imported on first
use, so that `import unode_jax.serving.exported` (an exported model's loader) needs only jax and
numpy.
"""
__version__ = '0.1.0'


def __getattr__(name):
    if name == 'Detector':
        from unode_jax.detector import Detector
        return Detector
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
