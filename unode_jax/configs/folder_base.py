"""Shared settings of the image-folder datasets (photos, CT slices, dermoscopy): not run alone.

224 x 224 inputs, as ImageNet-style backbones expect: each image's shorter side is
scaled to 256 and the centre 224 x 224 kept (torchvision's Resize(256) +
CenterCrop(224)), the same for training, test and predicted images. The dataset
configs below set data.name, the batch and their paper numbers; data.path is the
dataset's root folder, always given on the command line.
Cost: a Wide-ResNet-50-2 image at 224 px (ImageNet stem) is 3.2x the FLOPs of one at
32 px with the CIFAR stem (benchmarks/flops.py: 8.35 TFLOP per step at batch 32); an
accelerator job.
The first run decodes every image once (Pillow) and caches the arrays; later runs
start in seconds.
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
"""
from unode_jax.configs import cifar10

IMAGE_SIZE = 224
RESIZE = 256


def get_config():
    config = cifar10.get_config()
    config.data.image_size = IMAGE_SIZE
    config.model.stem = 'imagenet'  # 224 px: torchvision's stem, as ImageNet backbones.
    config.data.resize = RESIZE
    return config
