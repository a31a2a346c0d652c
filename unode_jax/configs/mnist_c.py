"""MNIST-C (Table 2: 86.0 AUROC from scratch, 89.5 pretrained), on one-class models.

  python launch.py --config=configs/mnist_c.py --workdir=runs/mnist \\
      --config.data.normal_class=-1 --mode=all
  # or, on a sweep already trained with configs/mnist.py, no retraining:
  python launch.py --config=configs/mnist_c.py --workdir=runs/mnist \\
      --config.data.normal_class=-1 --mode=corrupted

Every class's model (trained on clean images, as configs/mnist.py) scores each corrupted
copy of the test set; corrupted.md holds the AUROC per corruption and class and their
means. Corruptions: tfds: mnist_corrupted, its 15 corruptions (one severity).
Cost: training as configs/mnist.py,
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
from unode_jax.configs import mnist


def get_config():
    config = mnist.get_config()
    return config
