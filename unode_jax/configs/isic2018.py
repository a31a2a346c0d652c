"""ISIC 2018 task 3 one-class, nevus normal (Table 1: 83.6 AUROC from scratch, 86.1 pretrained).

  python launch.py --config=configs/isic2018.py --workdir=runs/isic2018 \\
      --config.data.path=/data/isic2018

data.path holds ISIC2018_Task3_Training_Input/, ISIC2018_Task3_Training_GroundTruth/,
ISIC2018_Task3_Test_Input/ and ISIC2018_Task3_Test_GroundTruth/ as extracted from
https://challenge.isic-archive.com/data/#2018. Trained on the 6,705 NV (nevus) training
images; tested on the 1,512 official test images, NV normal and the six other classes
(MEL, BCC, AKIEC, BKL, DF, VASC) novel. Without the test set at hand,
--config.data.isic_holdout=0.2 tests on a seeded fifth of the NV training images and
the other training classes instead (optimistic: some lesions have several images).
Negatives: AutoAugOOD; the authors' hand-set cutpaste 0.8 / mixup 0.2:
--config.negatives.weights=authors.
Cost: ~11,500 images decoded once (a few minutes); 52 steps per epoch at batch 128,
52,000 steps at 224 px with Wide-ResNet-50-2: about a day on one GPU.
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
XLA FLOPs per training step: 33.4 TFLOP (Wide-ResNet-50-2, ImageNet stem, 224 px, batch 128;
benchmarks/flops.py).
Memory of that step on one device (XLA, compiled on a CPU: benchmarks/flops.py
--memory; unode_jax/training/memory.py checks a GPU/TPU run before its first step):
83.3 GiB in float32 (662 MiB an inlier image): more than one
80 GB GPU holds, so spread the batch over devices (batch_size is global).
"""
from unode_jax.configs import folder_base


def get_config():
    config = folder_base.get_config()
    config.data.name = 'isic2018'
    return config
