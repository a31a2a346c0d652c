"""Head CT - hemorrhage one-class (Table 1: 89.6 AUROC from scratch, 84.7 pretrained).

  python launch.py --config=configs/head_ct.py --workdir=runs/head_ct \\
      --config.data.path=/data/head_ct

data.path holds head_ct/000.png ... 199.png and labels.csv (columns id, hemorrhage), as
https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage unpacks. The authors'
protocol: 75 normal scans, drawn with config.seed, are trained on; the other 25 normal
and all 100 hemorrhage scans are the test set (hemorrhage = novel). Gray CT slices of
mixed sizes, made 3-channel at 224 px. Negatives: AutoAugOOD; the authors' hand-set
cutpaste 0.6 / mixup 0.4: --config.negatives.weights=authors. Vertical structure
matters less than in digits, so flips stay on.
Cost: 200 images decoded once (seconds); 2 steps per epoch at batch 32, 2,000 steps.
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
    config.data.name = 'head_ct'
    config.batch_size = 32  # 75 training images.
    return config
