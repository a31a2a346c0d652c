"""Fashion-MNIST one-class (Table 1: 94.2 AUROC from scratch).

  python launch.py --config=configs/fashion_mnist.py --workdir=runs/fmnist --config.data.normal_class=-1

Cost: 6,000 images per class = 46 steps per epoch, 46,000 steps per class.
"""
from configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.data.name = 'fashion_mnist'
    return config
