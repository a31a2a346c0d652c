"""Fashion-MNIST one-class (Table 1: 94.2 AUROC from scratch).

  python launch.py --config=configs/fashion_mnist.py --workdir=runs/fmnist --config.data.normal_class=-1

Cost: 6,000 images per class = 46 steps per epoch, 46,000 steps per class.
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
    config.data.name = 'fashion_mnist'
    return config
