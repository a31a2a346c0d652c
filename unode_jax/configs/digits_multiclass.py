"""Multi-class on the CPU, offline: digits 0-4 are the inliers, 5-9 (and random noise) novel.

  python launch.py --config=configs/digits_multiclass.py --workdir=runs/digits_unlabeled
  python launch.py --config=configs/digits_multiclass.py --workdir=runs/digits_labeled \
    --config.data.setting=labeled

The stand-in for Table 3 that needs no download: one model on the ~600 training images
of digits 0-4 (unlabeled: labels unused; labeled: a 6-way head), its test images scored
against those of digits 5-9 ('rest'). The quick start's model and settings
(configs/digits.py), 10 epochs of ~37 steps. No paper number.
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
XLA FLOPs per training step: 2.6 GFLOP (resnet18_cifar_w16, 16 px, batch 16;
benchmarks/flops.py).
Memory of that step on one device (XLA, compiled on a CPU: benchmarks/flops.py
--memory; unode_jax/training/memory.py checks a GPU/TPU run before its first step):
0.04 GiB in float32.
"""
from unode_jax.configs import digits


def get_config():
    config = digits.get_config()
    config.data.setting = 'unlabeled'
    config.data.inlier_classes = (0, 1, 2, 3, 4)
    config.data.outlier_sets = ('rest',)
    config.optim.num_epochs = 10
    return config
