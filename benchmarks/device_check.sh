#!/usr/bin/env bash
# The first run on a GPU or TPU machine, one command, under 10 minutes (benchmarks/device_check.py
# says what each stage does). Run from anywhere:
#
#   bash benchmarks/device_check.sh
#   DEVICE_CHECK_FMNIST=/usr/share/datasets/fashion-mnist bash benchmarks/device_check.sh
#   DEVICE_CHECK_WHEELS=wheels bash benchmarks/device_check.sh   # install offline first
#
# A machine with no internet gets the pinned packages from a folder of wheels made where
# there is one (pip download -r requirements.txt -d wheels, plus jax's CUDA or TPU wheels):
# DEVICE_CHECK_WHEELS=DIR installs them with pip --no-index before the check.
set -uo pipefail
PYTHON=${PYTHON:-python}  # The interpreter with the packages.
cd "$(dirname "$0")/.."
if [[ -n "${DEVICE_CHECK_WHEELS:-}" ]]; then
  "$PYTHON" -m pip install -q --no-index --find-links="$DEVICE_CHECK_WHEELS" -r requirements.txt \
    || { echo "error: pip could not install requirements.txt from $DEVICE_CHECK_WHEELS" >&2
         exit 2; }
fi
missing=$("$PYTHON" - <<'EOF'
import importlib.util
names = ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'ml_collections', 'dm_pix',
         'sklearn', 'tqdm', 'absl', 'pytest')
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # A missing parent package (orbax).
        return False
print(' '.join(n for n in names if not found(n)))
EOF
)
if [[ -n "$missing" ]]; then
  echo "error: missing Python packages: $missing; install them with pip install -r" \
       "requirements.txt (no internet: DEVICE_CHECK_WHEELS=DIR with wheels from" \
       "pip download -r requirements.txt -d DIR)" >&2
  exit 2
fi
exec "$PYTHON" benchmarks/device_check.py "$@"
