"""Unlabeled multi-class, CIFAR-100 as inliers (Table 3a: 72.5 / 83.3 / 93.6 / 99.2 / 84.4 AUROC
against CIFAR-10 / SVHN / MNIST / Fashion-MNIST / ImageNet-30).

  python launch.py --config=configs/cifar100_unlabeled.py --workdir=runs/cifar100_unlabeled

ImageNet-30: add 'imagenet30=/data/imagenet30/test' to data.outlier_sets (see
configs/cifar10_unlabeled.py). Cost as configs/cifar10_unlabeled.py.
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
from unode_jax.configs import cifar10_unlabeled


def get_config():
    config = cifar10_unlabeled.get_config()
    config.data.name = 'cifar100'
    config.data.outlier_sets = ('cifar10', 'svhn', 'mnist', 'fashion_mnist')
    return config
