"""ImageNet-30 one-class, 30 classes (no Table 1 entry; CSI's benchmark; Table 3a's outlier set).

  python launch.py --config=configs/imagenet30.py --workdir=runs/imagenet30 \\
      --config.data.path=/data/imagenet30 --config.data.normal_class=-1

data.path holds train/<class>/ and test/<class>/ (or one_class_train/ and
one_class_test/, as the archives of https://github.com/hendrycks/ss-ood unpack).
Each class is trained on its 1,300 training images and tested one-vs-rest on the
3,000 test images. For Table 3a the test folder is an outlier set instead:
--config.data.outlier_sets="(...,'imagenet30=/data/imagenet30/test')" in
configs/cifar10_unlabeled.py.
The dataset takes 5.9 GB of host memory as uint8; one class's 1,300 images (196 MB)
live on the devices. Training on all of it at once (data.setting='unlabeled') is above
data.device_budget_mb (4 GiB), so its images stay in host memory and each step's batch
is sent to the devices.
Cost: 42,000 images decoded once (~15 minutes on 2 cores); 10 steps per epoch,
10,000 steps per class.
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
    config.data.name = 'imagenet30'
    return config
