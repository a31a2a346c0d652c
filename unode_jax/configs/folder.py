"""Your own images: normal ones to train on, and optionally labelled test images.

  python launch.py --config=configs/folder.py --workdir=runs/mine --config.data.path=/data/mine
  python launch.py --config=configs/folder.py --workdir=runs/mine --config.data.path=/data/mine \\
      --mode=predict --images='/data/new/*.jpg'

data.path holds train/ (normal images, sub-folders allowed) and, to measure AUROC,
test/normal/ and test/anomaly/ (more anomalous folder names:
--config.data.anomaly_dirs="('scratch','dent')"). Without test/ the run only trains
and saves the model for --mode=predict. A tenth of the training images is held out
to fit predict's threshold. PNG or JPEG, any size and mode; 224 px by default
(--config.data.image_size=64 --config.data.resize=72 for small images and CPUs).
Unreadable files are skipped and listed in <workdir>/skipped_images.csv.
Cost: 1000 epochs; n / 32 steps per epoch for n training images.
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
XLA FLOPs per training step: 8.35 TFLOP (Wide-ResNet-50-2, ImageNet stem, 224 px, batch 32;
benchmarks/flops.py).
Memory of that step on one device (XLA, compiled on a CPU: benchmarks/flops.py
--memory; unode_jax/training/memory.py checks a GPU/TPU run before its first step):
21.5 GiB in float32 (672 MiB an inlier image).
"""
from unode_jax.configs import folder_base


def get_config():
    config = folder_base.get_config()
    config.data.name = 'folder'
    config.batch_size = 32
    config.predict.holdout = 0.1
    return config
