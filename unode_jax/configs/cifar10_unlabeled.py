"""Unlabeled multi-class, CIFAR-10 as inliers (Table 3a: 92.4 / 97.0 / 99.4 / 99.7 / 93.8 AUROC
against CIFAR-100 / SVHN / MNIST / Fashion-MNIST / ImageNet-30).

  python launch.py --config=configs/cifar10_unlabeled.py --workdir=runs/cifar10_unlabeled
  # with ImageNet-30's test folder (any layout of PNG/JPEG files below it):
  python launch.py --config=configs/cifar10_unlabeled.py --workdir=runs/cifar10_unlabeled \
    --config.data.outlier_sets="('cifar100','svhn','mnist','fashion_mnist','imagenet30=/data/imagenet30/test')"

All 50,000 training images, labels unused, train one model; its score on the 10,000
CIFAR-10 test images is compared with each outlier test set's (all 32 x 32 x 3, gray
made RGB). Needs those tfds datasets prepared in data.data_dir. Cost: 390 steps per
epoch, 390,000 steps for the paper's 1000 epochs (Wide-ResNet-50-2): an accelerator job.
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
    config.data.setting = 'unlabeled'
    config.data.outlier_sets = ('cifar100', 'svhn', 'mnist', 'fashion_mnist')
    return config
