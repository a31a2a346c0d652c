"""CIFAR-10 one-class, the paper's settings (Table 1: 95.4 AUROC from scratch, mean of 10 classes).

  python launch.py --config=configs/cifar10.py --workdir=runs/cifar10 --config.data.normal_class=0
  python launch.py --config=configs/cifar10.py --workdir=runs/cifar10 --config.data.normal_class=-1

Paper: Wide-ResNet-50-2 from scratch, LARS, lr 0.1 -> 1.0 over 10 warmup epochs
then cosine, 1000 epochs, 128 inliers per step. The authors' code trains a CIFAR
ResNet-18 instead (--config.model.name=resnet18_cifar) with one-transform
negatives (--config.negatives.mode=single --config.negatives.weights=authors).
Negatives: AutoAugOOD weights per class (negatives.weights='auto'), from CLIP RN50
embeddings of 300 training images and their 8 transformed copies; RN50.pt is fetched
once into ~/.cache/unode_jax/clip/ (or --config.autoaug.clip_weights=RN50.pt; offline:
--config.autoaug.embedder=random_cnn). Every dataset config below inherits this.
Stem: Wide-ResNet-50-2 is trained from scratch at 32 px with a CIFAR stem (3x3/1 conv, no
max-pool: layer1 sees 32 x 32, layer4 4 x 4), as CIFAR ResNets and the authors' ResNet-18
are; torchvision's ImageNet stem (--config.model.stem=imagenet) leaves an 8 x 8 map after
the stem and 1 x 1 in layer4. XLA FLOPs per training step (batch 128, 512 rows;
python benchmarks/flops.py --config=configs/cifar10.py [--config.model.stem=...]):
  cifar 10.4 TFLOP (the default) | imagenet 0.53 TFLOP | imagenet_224 (upsampled) 33.3 TFLOP.
Memory of the default step on one device (XLA, compiled on a CPU: benchmarks/flops.py
--memory; unode_jax/training/memory.py checks a GPU/TPU run before its first step):
25.9 GiB in
float32 (203 MiB an inlier image); on a CPU, XLA's bfloat16 step takes more (29.7 GiB),
as bfloat16 is emulated there, so a GPU's bfloat16 saving is not measured here.
Cost: AutoAugOOD ~5 minutes per class on 2 CPU cores (seconds on a GPU); 5,000 images
per class = 39 steps per epoch, 39,000 steps per class: 406 PFLOP a class with the CIFAR
stem.
Downloads and prepares the tfds cifar10 dataset into data.data_dir on its first run (needs the
internet and `pip install -r requirements-tfds.txt`), or reads it from there.
Defaults that depart from the paper's text (loss.kind, negatives.max_compose,
autoaug.divergence, score.features, score.balance; configs/default.py says why, with
the ablation numbers in docs/ablations.md); the text's choices: --config.loss.kind=paper
--config.negatives.max_compose=0 --config.autoaug.divergence=jeffreys
--config.score.features=projection --config.score.balance=appendix_c.
"""
from unode_jax.configs import default


def get_config():
    config = default.get_config()
    config.data.name = 'cifar10'
    config.model.name = 'wide_resnet50_2'
    # 32 px from scratch: the CIFAR stem (docstring; models/resnet.py STEMS).
    config.model.stem = 'cifar'
    return config
