r"""The command line (`unode-jax`, or `python launch.py` in the repository): train and evaluate a
novelty detector. --config takes a config file or a packaged config's name (digits, cifar10,
...; unode_jax/configs/).

  unode-jax --config=digits --workdir=/tmp/unode_digits
  python launch.py --config=configs/digits.py --workdir=/tmp/unode_digits
  python launch.py --config=configs/cifar10.py --workdir=DIR --config.data.normal_class=3
  python launch.py --config=configs/digits.py --workdir=DIR --mode=all  # + corrupted (Table 2)
  python launch.py --workdir=DIR/class_3 --mode=predict --images='new/*.png'  # predictions.csv
  python launch.py --workdir=DIR/class_3 --mode=export --out=EXPORT  # serving/exported.py
  python launch.py --workdir=DIR/class_3 --mode=export --format=onnx --out=EXPORT  # model.onnx
  python launch.py --workdir=DIR/class_3 --mode=eval --config.score.ensemble=10  # its config
  python launch.py --config=configs/mvtec.py --workdir=DIR --config.data.path=/data/mvtec \
      --config.data.normal_class=-1   # an image-folder dataset: data.path is its root
  python launch.py --mode=report --workdir=DIR   # rebuild the reports from saved scores
  python launch.py --mode=report --workdir=OUT --runs=runs/cifar10,runs/mnist  # Table 1
  # Several hosts (docs/multihost.md): the same command on each, ids 0..N-1; on a TPU
  # pod, under srun or mpirun the three flags are read from the environment instead.
  python launch.py --config=configs/cifar10.py --workdir=SHARED_DIR \
      --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0
"""
import contextlib
import faulthandler
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from unode_jax.configs import saved
from unode_jax.config_files import (SAVED_CONFIG, config_path, load_config_file,
                                    refuse_training_fields)
from unode_jax.evaluation import report
from unode_jax.modes import MODES
from unode_jax.run import run
from unode_jax.runtime import hosts, xla_options
from unode_jax.runtime.errors import ConfigError, error_line
from unode_jax.runtime.lock import workdir_lock
from unode_jax.validate import unknown_override, validate_config

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, "A config file (configs/digits.py) or a packaged "
                                'config by name (digits).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go.')
flags.DEFINE_enum('mode', 'train_eval', list(MODES), 'What to do (unode_jax/modes.py).')
flags.DEFINE_list('runs', None, '--mode=report: finished workdirs (e.g. one per dataset) to '
                  'summarise across, as Table 1, into --workdir/universality.{json,md}.')
flags.DEFINE_list('classes', None, 'One-class sweep (data.normal_class=-1): only these '
                  'classes, in this order, e.g. --classes=0,6,9 (default: every class).')
flags.DEFINE_string('images', None, '--mode=predict: a folder (searched recursively) or a glob '
                    'of PNG/JPEG images to score.')
flags.DEFINE_float('threshold', None, '--mode=predict: score below which an image is novel '
                   '(default: fitted on held-out normal training images, see predict.holdout).')
flags.DEFINE_string('out', None, '--mode=export: the folder to write the exported model to '
                    '(unode_jax/serving/export.py).')
flags.DEFINE_enum('format', 'jax', ['jax', 'onnx'], '--mode=export: jax (jax.export\'s '
                  'function, for serving/exported.py) or onnx (model.onnx, for ONNX Runtime; '
                  "pip install 'unode-jax[onnx]'), unode_jax/serving/onnx_export.py.")
flags.DEFINE_string('compilation_cache', 'auto', "JAX's persistent compilation cache: auto "
                    '(on a GPU or TPU, under ~/.cache/unode_jax/xla; off on a CPU), a folder, '
                    'or none (unode_jax/runtime/xla_options.py).')
flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0, the '
                    'same on every process (absent: detected on Cloud TPU, under Slurm or '
                    'Open MPI; else one process).')
flags.DEFINE_integer('num_processes', None, 'Multi-host: how many processes form the run '
                     '(1: one, even where a cluster is detected).')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0..num_processes-1; 0 '
                     'writes the workdir.')
flags.DEFINE_integer('heartbeat_timeout_s', 100, 'Multi-host: a process that stops answering '
                     'for this long stops the others (with an error).')
flags.DEFINE_bool('debug', os.environ.get('UNODE_DEBUG', '') not in ('', '0'),
                  'Show the traceback of an error (default: one line; also UNODE_DEBUG=1).')
flags.mark_flags_as_required(['workdir'])


def parse_flags(argv):
    """absl's flag parsing; a bad flag, a missing config file or a --config.<field> that
    names no field is one line. Without --config, a trained workdir's own config."""
    argv = with_saved_config(argv)
    path = _flag_value(argv, 'config')
    file, _, arg = path.partition(':') if path is not None else (None, '', '')
    if path is not None:
        try:
            file = config_path(file)
        except ConfigError as e:
            sys.exit(f'error: --config={path}: {e}')
        argv = _with_flag(argv, 'config', file + (':' + arg if arg else ''))
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError, OSError, flags.Error) as e:
        try:
            bad = path and unknown_override(argv, load_config_file(file, arg or None))
        except Exception:  # noqa: BLE001 -- the config file itself is broken: absl's message
            bad = None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.exit(f'error: {bad or first} (--helpfull lists the flags)')


def _flag_value(argv, name):
    """The value of --name=V or --name V in argv, or None."""
    for i, a in enumerate(argv[1:], 1):
        if a.startswith(f'--{name}='):
            return a.split('=', 1)[1]
        if a == f'--{name}' and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _with_flag(argv, name, value):
    """argv with --name's value replaced (as --name=value)."""
    out, skip = [argv[0]], False
    for i, a in enumerate(argv[1:], 1):
        if skip:
            skip = False
        elif a.startswith(f'--{name}='):
            out.append(f'--{name}={value}')
        elif a == f'--{name}' and i + 1 < len(argv):
            out.append(f'--{name}={value}')
            skip = True
        else:
            out.append(a)
    return out


def with_saved_config(argv):
    """argv with --config=configs/saved.py:WORKDIR when --config is not given and WORKDIR
    holds a trained model's config.json; an override of a field that training read is
    then a one-line error (config_files.refuse_training_fields)."""
    workdir = _flag_value(argv, 'workdir')
    if (_flag_value(argv, 'config') is not None or workdir is None
            or _flag_value(argv, 'mode') == 'report'
            or saved.saved_config_path(workdir)[0] is None):
        return argv
    fields = [a[len('--config.'):].split('=', 1)[0] for a in argv[1:]
              if a.startswith('--config.')]
    try:
        refuse_training_fields(fields, workdir, flag='--config.')
    except ConfigError as e:
        sys.exit(f'error: {e}')
    return [argv[0], f'--config={SAVED_CONFIG}:{workdir}'] + argv[1:]


def main(argv):
    if len(argv) > 1:
        sys.exit(f'error: unexpected arguments {argv[1:]} (flags are --name=value)')
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.debug:  # absl's faulthandler dumps every thread on an abort: --debug only.
        faulthandler.disable()
        # orbax logs a failed background save (a full disk) at ERROR with its traceback,
        # then raises it: the raised error is the one line.
        std_logging.getLogger('absl').addFilter(
            lambda record: '/orbax/' not in record.pathname.replace(os.sep, '/'))
    sys.stdout.reconfigure(errors='backslashreplace')  # File names that are not UTF-8.
    if FLAGS.config is None and MODES[FLAGS.mode].needs_config:
        sys.exit(f'error: --config is required for --mode={FLAGS.mode} ({FLAGS.workdir} has no '
                 'config.json of a trained model)')
    if FLAGS.runs and FLAGS.mode != 'report':
        sys.exit('error: --runs goes with --mode=report')
    if FLAGS.out and FLAGS.mode != 'export':
        sys.exit('error: --out goes with --mode=export')
    if FLAGS['format'].present and FLAGS.mode != 'export':
        sys.exit('error: --format goes with --mode=export')
    if FLAGS.classes and not all(c.strip().isdigit() for c in FLAGS.classes):
        sys.exit(f'error: --classes takes class numbers, e.g. --classes=0,6,9, got '
                 f'{",".join(FLAGS.classes)}')
    classes = [int(c) for c in FLAGS.classes] if FLAGS.classes else None
    if MODES[FLAGS.mode].devices:
        xla_options.set_flags(FLAGS.config)  # Before anything starts the backend.
    try:
        cluster = hosts.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id, FLAGS.heartbeat_timeout_s)
        if cluster and hosts.is_writer():
            print(cluster, flush=True)
        elif cluster:  # Process 0 alone prints; the others' errors still reach stderr.
            sys.stdout = open(os.devnull, 'w')
            if FLAGS.config is not None:
                FLAGS.config.progress_bar = False
            if not MODES[FLAGS.mode].devices:
                return  # Files only (--mode=report): process 0's work.
        if MODES[FLAGS.mode].needs_config:
            validate_config(FLAGS.config)  # Before any data, device or compile work.
        if MODES[FLAGS.mode].devices:
            xla_options.enable(FLAGS.compilation_cache)
        with contextlib.ExitStack() as lock:
            error = None
            if hosts.is_writer():  # Process 0 holds the workdir for every process.
                try:
                    lock.enter_context(workdir_lock(FLAGS.workdir, FLAGS.mode))
                except Exception as e:  # noqa: BLE001 -- raised by agree, on every process
                    error = e
            if MODES[FLAGS.mode].devices:  # Files-only modes run on process 0 alone.
                hosts.agree(error, f'taking the lock of {FLAGS.workdir}')
            elif error is not None:
                raise error
            if FLAGS.runs:
                print(report.write_universality(FLAGS.workdir, FLAGS.runs), end='')
            else:
                run(FLAGS.config, FLAGS.workdir, FLAGS.mode, classes=classes,
                    images=FLAGS.images, threshold=FLAGS.threshold, out=FLAGS.out,
                    export_format=FLAGS.format)
    except KeyboardInterrupt:
        if FLAGS.debug:
            raise
        sys.exit(f'stopped (Ctrl-C) during --mode={FLAGS.mode}: rerun the same command to '
                 f'resume from the last checkpoint in {FLAGS.workdir}')
    except Exception as e:  # noqa: BLE001 -- one line for everything; --debug for the rest
        if FLAGS.debug:
            raise
        sys.exit(error_line(e, FLAGS.workdir))


def entry():
    """The `unode-jax` console command (pyproject.toml) and launch.py. --help lists this
    module's flags and usage, as absl lists those of the program it runs (sys.argv[0])."""
    for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__]):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    sys.modules['__main__'].__doc__ = __doc__  # absl's usage text: this module's
    app.run(main, flags_parser=parse_flags)
