"""CIFAR-10 one-class from an ImageNet-pretrained Wide-ResNet-50-2 (paper: 96.9 AUROC, pretrained).

  python launch.py --config=configs/cifar10_pretrained.py --workdir=runs/c10p \\
      --config.model.pretrained=wide_resnet50_2-95faca4d.pth

The weights are torchvision's ImageNet files, read without torch:
  https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth  (263 MB)
  https://download.pytorch.org/models/resnet18-f37072fd.pth  (45 MB; with
  --config.model.name=resnet18)

The authors' pretrained setting, on top of configs/cifar10.py: ImageNet input
normalisation, the penultimate feature L2-normalised before both heads, and the
stem, layer1 and layer2 frozen for the first 100 epochs (their BatchNorm
statistics still update). The freeze is counted in steps, 100 * (5000 //
batch_size) for CIFAR-10's 5,000 training images per class; it follows
--config.batch_size (another dataset needs its own --config.optim.unfreeze_step).
Cost: as configs/cifar10.py, 39 steps per epoch and 39,000 steps per class at
batch 128, plus reading the file once per process. The ImageNet weights need the
ImageNet stem (model.stem=imagenet), which at 32 px leaves layer4 a 1x1 map: 0.53 TFLOP
per step (benchmarks/flops.py); --config.model.stem=imagenet_224 upsamples the images to
224 px inside the model and feeds the backbone at its ImageNet resolution, 33.3 TFLOP
per step (63x).
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
"""
from unode_jax.configs import cifar10
from unode_jax.models import FROZEN_PREFIXES

IMAGES_PER_CLASS = 5000  # CIFAR-10 training images of one normal class.
FROZEN_EPOCHS = 100


def get_config():
    config = cifar10.get_config()
    config.model.stem = 'imagenet'  # The weights' 7x7 stem (cifar cannot load them).
    config.model.input_norm = 'imagenet'
    config.model.normalize_feature = True
    config.optim.freeze_prefixes = FROZEN_PREFIXES[config.model.name]
    # A reference, so that --config.batch_size=N moves the unfreeze step with the epoch length.
    config.optim.unfreeze_step = FROZEN_EPOCHS * (IMAGES_PER_CLASS // config.get_ref('batch_size'))
    return config
