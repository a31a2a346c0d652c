"""CIFAR-10-C (Table 2: 88.9 AUROC from scratch, 89.2 pretrained), on one-class models.

  python launch.py --config=configs/cifar10_c.py --workdir=runs/cifar10 \\
      --config.data.normal_class=-1 --mode=all
  # or, on a sweep already trained with configs/cifar10.py, no retraining:
  python launch.py --config=configs/cifar10_c.py --workdir=runs/cifar10 \\
      --config.data.normal_class=-1 --mode=corrupted

Every class's model (trained on clean images, as configs/cifar10.py) scores each
corrupted copy of the test set; corrupted.md holds the AUROC per corruption and class
and their means. Corruptions: tfds: cifar10_corrupted, 19 corruptions at severity 5
(--config.corruptions.severity=1..5).
Cost: training as configs/cifar10.py,
then one pass over each corrupted test set per class.
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
    return config
