"""SVHN-C (Table 2: 91.5 AUROC from scratch, 88.5 pretrained), on one-class models.

  python launch.py --config=configs/svhn_c.py --workdir=runs/svhn \\
      --config.data.normal_class=-1 --mode=all
  # or, on a sweep already trained with configs/svhn.py, no retraining:
  python launch.py --config=configs/svhn_c.py --workdir=runs/svhn \\
      --config.data.normal_class=-1 --mode=corrupted

Every class's model (trained on clean images, as configs/svhn.py) scores each corrupted
copy of the test set; corrupted.md holds the AUROC per corruption and class and their
means. Corruptions: ours, the paper's list (appendix B): contrast, gaussian blur,
gaussian noise, glass blur, impulse noise, shot noise, speckle noise; severity 5.
Cost: training as configs/svhn.py,
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
from unode_jax.configs import svhn


def get_config():
    config = svhn.get_config()
    config.corruptions.names = (
        'contrast', 'gaussian_blur', 'gaussian_noise', 'glass_blur',
        'impulse_noise', 'shot_noise', 'speckle_noise')
    return config
