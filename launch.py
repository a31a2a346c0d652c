r"""UNODE: train and evaluate a novelty detector (the same as the `unode-jax` command that
`pip install .` installs; the flags and modes are in unode_jax/cli.py).

  python launch.py --config=configs/digits.py --workdir=/tmp/unode_digits
  python launch.py --config=digits --workdir=/tmp/unode_digits   # a packaged config by name
"""
from unode_jax.cli import entry

if __name__ == '__main__':
    entry()
