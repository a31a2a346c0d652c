"""CIFAR-100 one-class on the 20 superclasses (Table 1: 94.4 AUROC from scratch).

  python launch.py --config=configs/cifar100.py --workdir=runs/cifar100 --config.data.normal_class=-1

Cost: 2,500 images per superclass = 19 steps per epoch, 19,000 steps per class.
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
    config.data.name = 'cifar100'
    config.data.cifar100_coarse = True
    return config
