"""EMNIST-Letters-C (Table 2: 85.3 AUROC from scratch, 83.2 pretrained), one-class models.

  python launch.py --config=configs/emnist_letters_c.py --workdir=runs/emnist \\
      --config.data.normal_class=-1 --mode=all
  # or, on a sweep already trained with configs/emnist_letters.py, no retraining:
  python launch.py --config=configs/emnist_letters_c.py --workdir=runs/emnist \\
      --config.data.normal_class=-1 --mode=corrupted

Every class's model (trained on clean images, as configs/emnist_letters.py) scores each
corrupted copy of the test set; corrupted.md holds the AUROC per corruption and class
and their means. Corruptions: ours, the paper's list (appendix B): brightness, contrast,
glass blur, impulse noise, motion blur, rotation, saturation, scale, shear, shot noise,
gaussian noise; severity 5.
Cost: training as configs/emnist_letters.py,
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
from unode_jax.configs import emnist_letters


def get_config():
    config = emnist_letters.get_config()
    config.corruptions.names = (
        'brightness', 'contrast', 'glass_blur', 'impulse_noise', 'motion_blur',
        'rotate', 'saturate', 'scale', 'shear', 'shot_noise', 'gaussian_noise')
    return config
