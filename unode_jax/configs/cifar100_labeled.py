"""Labeled multi-class, CIFAR-100 as inliers (Table 3b: 76.6 / 87.0 / 91.2 / 94.5 AUROC against
CIFAR-10 / SVHN / MNIST / Fashion-MNIST).

  python launch.py --config=configs/cifar100_labeled.py --workdir=runs/cifar100_labeled

The 100 fine classes (appendix B.3: "n distinct in-distribution classes"), so a 101-way
head. Cost as configs/cifar10_unlabeled.py.
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
from unode_jax.configs import cifar100_unlabeled


def get_config():
    config = cifar100_unlabeled.get_config()
    config.data.setting = 'labeled'
    config.data.cifar100_coarse = False
    return config
