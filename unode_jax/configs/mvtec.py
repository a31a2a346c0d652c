"""MVTecAD one-class, per category (Table 1: 95.3 AUROC from scratch, 95.9 pretrained; mean of 15).

  python launch.py --config=configs/mvtec.py --workdir=runs/mvtec \\
      --config.data.path=/data/mvtec_anomaly_detection --config.data.normal_class=-1

data.path holds <category>/train/good and <category>/test/<type> (the archive
mvtec_anomaly_detection.tar.xz from https://www.mvtec.com/company/research/datasets/mvtec-ad).
Class c is category data.categories[c] (default all 15 in alphabetical order: 0 bottle,
1 cable, ... 14 zipper; e.g. --config.data.categories="('screw',)"). Each category is
trained on its train/good images and tested on its own test/ images, those outside
test/good anomalous (image-level AUROC; not one-vs-rest). Train and test images are
prepared identically (the authors' loader does not). Negatives: AutoAugOOD per
category; the authors' hand-set cutpaste 0.8 / mixup 0.2: --config.negatives.weights=authors.
Batch 32: the smallest category (toothbrush) has 60 training images.
Cost: 5,354 images decoded once (~1 minute); 1-12 steps per epoch, 1,000-12,000 steps
per category at 224 px with Wide-ResNet-50-2: hours per category on one GPU.
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
    config.data.name = 'mvtec'
    config.batch_size = 32
    return config
