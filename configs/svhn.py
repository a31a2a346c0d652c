"""SVHN one-class (Table 1: 96.3 AUROC from scratch).

  python launch.py --config=configs/svhn.py --workdir=runs/svhn --config.data.normal_class=-1

No flips for digits. Cost: 4,700-13,900 images per class, 36-108 steps per epoch.
"""
from configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.data.name = 'svhn'
    config.views.flip = False
    return config
