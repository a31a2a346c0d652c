"""`python -m unode_jax ...`: the command line, as `unode-jax` and launch.py (cli.py)."""
from unode_jax.cli import entry

entry()
