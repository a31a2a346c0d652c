"""FGVC-Aircraft one-class on ten variants (Table 1: 80.2 AUROC from scratch, 82.9 pretrained).

  python launch.py --config=configs/fgvc_aircraft.py --workdir=runs/fgvc \\
      --config.data.path=/data/fgvc-aircraft-2013b/data --config.data.normal_class=-1

data.path is the data/ folder of fgvc-aircraft-2013b.tar.gz
(https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/): images/, variants.txt,
images_variant_trainval.txt, images_variant_test.txt. The paper's ten variants
[91, 96, 59, 19, 37, 45, 90, 68, 74, 89] (lines of variants.txt, 0-based) are classes
0..9; each is trained on its ~67 trainval images and tested one-vs-rest on the test
images of all ten. The 20-pixel copyright banner at the bottom of every image is cut
off before resizing.
Cost: ~1,000 images decoded once (seconds); 2 steps per epoch at batch 32, 2,000 steps
per class at 224 px.
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
    config.data.name = 'fgvc_aircraft'
    config.batch_size = 32  # 66-67 trainval images per variant.
    return config
