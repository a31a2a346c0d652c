"""unode-jax: UNODE novelty detection (CVPR 2024) in JAX/Flax."""
