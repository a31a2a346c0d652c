"""Textures (offline): patches of scikit-image's bundled grass, gravel, Hubble deep field
and moon images, one class per texture.

  python launch.py --config=configs/textures.py --workdir=runs/textures

32 x 32 gray patches at 32 x 32 x 3 (unode_jax/data/textures.py): 493 training patches a
class from each image's left part, 261 test patches from its right part, a fifth of the
training patches held out for predict's threshold (they overlap training patches: the
grid's stride is 8). Why it exists: rotation is harmless on these textures (a patch of
grass turned by 90 degrees is still grass), so AutoAugOOD should give the rotation
negative a low weight here, where it gives it a high one on digits and Fashion-MNIST.
Every setting is the quick start's (configs/digits.py) except the data, what the image
size forces (32 px) and the budget. Needs scikit-image
(requirements.txt). Cost: 253 s for the 4 classes on 2 CPU cores (Intel Xeon, shared
with a test run). The same run's AUROC: 94.4 mean (grass 92.7, gravel 85.6, galaxies
100.0, moon 99.3); the untrained network 83.8, pixel kNN 50.2; 95.5 with the recipe
before the transform head and the rotation copies. No paper number.
"""
from unode_jax.configs import digits


def get_config():
    config = digits.get_config()
    config.data.name = 'textures'
    config.data.image_size = 32
    # Batch 16 (digits'): 394 training patches a class (the fifth held out) make 24 steps an
    # epoch, so 5 epochs are digits' 120 steps a class; 1 warmup epoch is 24 steps (digits'
    # 3 are 18).
    config.optim.num_epochs = 5
    config.optim.warmup_epochs = 1
    return config
