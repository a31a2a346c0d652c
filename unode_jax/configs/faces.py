"""Faces (offline): scikit-image's lfw_subset, 100 faces and 100 non-face patches.

  python launch.py --config=configs/faces.py --workdir=runs/faces
  python launch.py --config=configs/faces.py --workdir=runs/faces_ablation --mode=ablate

25 x 25 gray images at 32 x 32 x 3; class 0 = face, 1 = non-face (natural-image
patches), 70 training and 30 test images each, a fifth of the training images held
out for predict's threshold. The second real dataset of the ablations: every setting
is the quick start's (configs/digits.py), where the defaults were chosen, except what
the image size forces (32 px) and the budget (below). Needs
scikit-image (requirements.txt). Measured cost and numbers: docs/ablations.md and
"Table 1 at CPU scale". No paper number.
XLA FLOPs per training step: 11.9 GFLOP (resnet18_cifar_w16, 32 px, batch 16;
benchmarks/flops.py).
Memory of that step on one device (XLA, compiled on a CPU: benchmarks/flops.py
--memory; unode_jax/training/memory.py checks a GPU/TPU run before its first step):
0.12 GiB in float32.
"""
from unode_jax.configs import digits


def get_config():
    config = digits.get_config()
    config.data.name = 'faces'
    config.data.image_size = 32
    # The quick start's recipe (one for every CPU config, tests/test_config.py), its
    # lambda = 2 included: chosen on validation splits of digits', faces' and Fashion-MNIST's
    # training images together (configs/digits.py). 25 epochs (75 steps a class).
    config.optim.num_epochs = 25
    return config
