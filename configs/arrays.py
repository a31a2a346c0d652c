"""Your own images as arrays: a .npz with x_train, y_train, x_test, y_test (uint8 NHW or NHWC).

  python launch.py --config=configs/arrays.py --workdir=runs/mine \
      --config.data.path=my_data.npz --config.data.normal_class=0

Settings as the paper's CIFAR-10 run; scale num_epochs to your data size.
"""
from configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.data.name = 'arrays'
    return config
