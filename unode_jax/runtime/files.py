"""The run's own files read back: results, scores and banks that a kill, a full disk or a
hand may have damaged. A damaged file is one DamagedFileError naming it and what rewrites
it, never a numpy or json traceback; writes go through a temporary file and a rename.
And where a sweep keeps each class's model (class_dir)."""
import json
import os
import zipfile

import numpy as np

from unode_jax.runtime import hosts
from unode_jax.runtime.errors import DamagedFileError

CLASS_DIR = 'class_{}'  # A sweep's folder of normal class c (the only spelling of it).


def class_dir(workdir, normal_class):
    return os.path.join(workdir, CLASS_DIR.format(normal_class))


def _damaged(path, error, fix):
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return DamagedFileError(f'{path} is damaged ({reason}): {fix}')


def read_json(path, fix):
    """The JSON object in path; DamagedFileError (saying `fix`) if it does not parse."""
    try:
        with open(path, encoding='utf-8') as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise _damaged(path, e, fix) from None
    if not isinstance(value, dict):
        raise _damaged(path, f'a JSON {type(value).__name__}, not an object', fix)
    return value


def read_npz(path, fix):
    """{name: array} of a .npz without pickles; DamagedFileError (saying `fix`) if it does
    not read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise _damaged(path, e, fix) from None


def write_json(path, obj):
    """Atomic; in a multi-host run process 0 alone writes (on the others, nothing)."""
    if not hosts.is_writer():
        return
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)  # Atomic: a killed run never leaves half a file.


def write_npz(path, **arrays):
    """Atomic; in a multi-host run process 0 alone writes (on the others, nothing)."""
    if not hosts.is_writer():
        return
    tmp = path + '.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # Atomic: a killed run never leaves half a file.
