"""MNIST one-class (Table 1: 97.4 AUROC from scratch), 28 px digits resized to 32 x 32 x 3.

  python launch.py --config=configs/mnist.py --workdir=runs/mnist --config.data.normal_class=-1

No horizontal flips for digits. Cost: ~6,000 images per class = 46 steps per epoch.
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
XLA FLOPs per training step: 10.4 TFLOP (Wide-ResNet-50-2, CIFAR stem, 32 px, batch 128;
benchmarks/flops.py).
Memory of that step on one device (XLA, compiled on a CPU: benchmarks/flops.py
--memory; unode_jax/training/memory.py checks a GPU/TPU run before its first step):
25.9 GiB in float32 (203 MiB an inlier image).
"""
from unode_jax.configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.data.name = 'mnist'
    config.views.flip = False
    return config
