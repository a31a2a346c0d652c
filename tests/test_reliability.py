"""Bad input (issue 12): each builds its bad input in a temporary directory and checks the
exit code, that the user sees one line naming the problem, and what is left on disk.

The one line is launch.py's `error_line` of what `run()` raises; a few cases go through
launch.py itself to check that plumbing (rc 1, stderr exactly one line, --debug).
"""
import os
import shutil
import sys

import numpy as np
import pytest

from tests import children
from tests.tiny_config import tiny_config
from unode_jax import validate
from unode_jax.runtime import errors
from unode_jax.runtime.errors import (USER_ERRORS, ConfigError, DamagedFileError,
                                      WorkdirBusyError, error_line)
from unode_jax.run import run
from unode_jax.runtime.lock import LOCK_FILE, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {'negatives.transforms': ('rotation', 'cutout', 'mixup'), 'negatives.weights': 'uniform',
        'data.normal_class': 3}


def launch(*args, env=None):
    return children.launch(*args, env=dict(os.environ, **(env or {})))


def assert_one_line(r, *words):
    """rc 1 and stderr exactly one 'error: ...' line holding each of words."""
    assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr[-3000:]
    assert r.stderr.startswith('error: ') and all(w in r.stderr for w in words), r.stderr


def user_line(excinfo, *words):
    """The raised error is the user's (not shown as internal), as one line with words."""
    e = excinfo.value
    line = error_line(e)
    assert isinstance(e, USER_ERRORS) and '\n' not in line and 'internal' not in line, line
    assert all(w in line for w in words), line
    return line


def tree(path):
    """{relative path: bytes} of every file under path."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, 'rb') as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


@pytest.mark.slow
def test_report_on_damaged_results_or_scores_is_one_line(trained_digits3, tmp_path):
    work = tmp_path / 'w'
    shutil.copytree(trained_digits3, work)
    results = work / 'results.json'
    good = results.read_bytes()
    results.write_bytes(good[:len(good) // 2])
    with pytest.raises(DamagedFileError) as e:
        run(None, str(work), 'report')
    user_line(e, str(results), 'is damaged', '--mode=eval')
    results.write_bytes(good)
    scores = work / 'scores.npz'
    scores.write_bytes(scores.read_bytes()[:300])
    before = tree(work)
    r = launch('--mode=report', f'--workdir={work}')
    assert_one_line(r, str(scores), 'is damaged', '--mode=eval')
    assert tree(work) == before  # nothing rewritten from a half-read run


@pytest.mark.slow
def test_eval_on_an_empty_or_missing_workdir_leaves_nothing(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    for workdir in (empty, tmp_path / 'missing'):
        r = launch('--config=configs/digits.py', f'--workdir={workdir}', '--mode=eval',
                   '--config.data.normal_class=3')
        assert_one_line(r, 'no checkpoint', 'train first')
    assert os.listdir(empty) == [] and not (tmp_path / 'missing').exists()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_arrays_npz_content_errors_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    good = dict(x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    cases = {
        'keys': (dict(good, x_train=None), ['missing key(s)', 'x_train']),
        'float': (dict(good, x_train=x / 255.0), ['x_train must be uint8', 'float64']),
        'lengths': (dict(good, y_train=y[:-1]), ['40 images', '39 labels']),
        'empty class': (dict(good, y_train=np.where(y == 2, 3, y)),
                        ['class 2 (2) has no training images']),
    }
    for name, (arrays, words) in cases.items():
        path = _npz(tmp_path / f'{name}.npz', **{k: v for k, v in arrays.items()
                                                 if v is not None})
        config = tiny_config(**{**FAST, 'data.name': 'arrays', 'data.path': path,
                                'data.normal_class': -1})
        workdir = tmp_path / name
        with pytest.raises(ValueError) as e:
            run(config, str(workdir))
        user_line(e, *words)
        assert not workdir.exists()  # stopped before any work


def test_batch_larger_than_a_class_stops_before_any_work(tmp_path):
    config = tiny_config(**{**FAST, 'batch_size': 200, 'negatives.weights': 'auto',
                            'predict.holdout': 0.2})
    with pytest.raises(ConfigError) as e:
        run(config, str(tmp_path / 'w'))
    # digits' class 3 has 122 training images, 98 once predict.holdout's 20% are set aside.
    user_line(e, 'class 3 (3) has 98 training images (24 held out', 'batch_size=200',
              'at most 98')
    assert not (tmp_path / 'w').exists()  # no AutoAugOOD, no config.json


@pytest.mark.slow
def test_non_finite_learning_rates(tmp_path):
    with pytest.raises(ConfigError) as e:
        validate.validate_config(tiny_config(**{'optim.peak_lr': float('nan')}))
    user_line(e, 'optim.peak_lr=nan', 'not a finite number')
    with pytest.raises(ConfigError) as e:
        validate.validate_config(tiny_config(**{'views.jitter': (0.4, float('inf'), 0, 0)}))
    user_line(e, 'views.jitter')
    # A finite but huge one trains to a non-finite loss: one line, nothing saved after it.
    config = tiny_config(**{**FAST, 'optim.peak_lr': 1e30, 'log_every': 1})
    with pytest.raises(FloatingPointError) as e:
        run(config, str(tmp_path / 'w'))
    user_line(e, 'non-finite loss at step', 'lower optim.peak_lr')


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    args = ('--config=configs/digits.py', f'--workdir={tmp_path / "w"}',
            '--config.optim.peak_lr=nan')
    assert_one_line(launch(*args), 'optim.peak_lr=nan')
    for r in (launch(*args, '--debug'), launch(*args, env={'UNODE_DEBUG': '1'})):
        assert r.returncode == 1 and 'Traceback (most recent call last)' in r.stderr
        assert 'ConfigError: optim.peak_lr=nan' in r.stderr


def test_an_internal_error_is_one_line_that_points_to_debug():
    line = error_line(KeyError('params'))
    assert line == ("error: KeyError: 'params' (an internal error: rerun with --debug for the "
                    'traceback)')
    assert error_line(OSError(13, 'Permission denied')) == 'error: [Errno 13] Permission denied'


def test_a_full_disk_is_one_line_naming_what_and_that_a_rerun_resumes():
    """Any write that meets a full disk (the checkpoints' own case: tests/test_train.py)."""
    resume = ('free some space and rerun the same command (it resumes from the last checkpoint '
              'in /w)')
    assert error_line(OSError(28, 'No space left on device', '/w/results.json'), '/w') == (
        f'error: no space left on device writing /w/results.json: {resume}')
    assert error_line(OSError(28, 'No space left on device'), '/w') == (
        f'error: no space left on device writing in /w: {resume}')
    # tensorstore's words, and a full disk under another error (raised from it).
    tensorstore = ValueError("RESOURCE_EXHAUSTED: Failed to write 10 bytes to file 15: "
                             "No space left on device [os_error_code='28']")
    try:
        try:
            raise tensorstore
        except ValueError as e:
            raise RuntimeError('saving failed') from e
    except RuntimeError as e:
        assert errors.is_disk_full(e) and error_line(e, '/w').startswith(
            'error: no space left on device writing in /w: ')
    assert not errors.is_disk_full(OSError(13, 'Permission denied'))
    assert not errors.is_disk_full(ValueError("os_error_code='2'"))


def test_workdir_lock(tmp_path, capsys):
    workdir = tmp_path / 'w'
    with workdir_lock(str(workdir), 'train'):
        held = (workdir / LOCK_FILE).read_text()
        assert held.startswith(f'process {os.getpid()} on ')
        with pytest.raises(WorkdirBusyError) as e:  # a second holder, even in this process
            with workdir_lock(str(workdir), 'eval'):
                pass
        user_line(e, str(workdir), f'process {os.getpid()}', '--mode=train')
        (workdir / 'kept.txt').write_text('x')
        # Another process: refused at once with one line, the workdir untouched.
        r = launch('--config=configs/digits.py', f'--workdir={workdir}')
        assert_one_line(r, f'{workdir} is in use by process {os.getpid()}')
        assert sorted(os.listdir(workdir)) == sorted([LOCK_FILE, 'kept.txt'])
    # Released: the lock file is gone; the workdir (not empty) stays.
    assert os.listdir(workdir) == ['kept.txt']
    # A lock file left by a killed run (no flock held) is taken over, and said so.
    (workdir / LOCK_FILE).write_text('process 99999999 on elsewhere (--mode=train, since x)')
    with workdir_lock(str(workdir), 'train'):
        pass
    assert 'taking over the lock of process 99999999' in capsys.readouterr().out
    # A workdir the lock created is removed again if the run left nothing in it.
    with workdir_lock(str(tmp_path / 'new'), 'eval'):
        assert (tmp_path / 'new').is_dir()
    assert not (tmp_path / 'new').exists()


def test_malicious_or_mismatched_pretrained_is_refused_before_any_work(tmp_path):
    from unode_jax.runtime.errors import CheckpointFormatError, UnsafeCheckpointError
    marker = '/tmp/unode_jax_torch_weights_pwned'  # what the fixture's pickle would create
    bad = tmp_path / 'weights.pth'
    shutil.copy(os.path.join(ROOT, 'tests/fixtures/reader/malicious_zip.pt'), bad)
    pretrained = {**FAST, 'negatives.weights': 'auto', 'model.name': 'resnet18',
                  'model.input_norm': 'imagenet', 'model.stem': 'imagenet',
                  'model.pretrained': str(bad)}
    config = tiny_config(**pretrained)
    with pytest.raises(UnsafeCheckpointError) as e:
        run(config, str(tmp_path / 'w'))
    user_line(e, str(bad), 'posix.system')
    assert not os.path.exists(marker) and not (tmp_path / 'w').exists()
    # Weights of another architecture: refused from the shapes, before AutoAugOOD.
    other = tmp_path / 'basic8.pth'
    shutil.copy(os.path.join(ROOT, 'tests/fixtures/torchvision/basic8.pth'), other)
    config.model.pretrained = str(other)
    with pytest.raises(CheckpointFormatError) as e:
        run(config, str(tmp_path / 'w'))
    user_line(e, 'model.name=resnet18')
    assert not (tmp_path / 'w').exists()


# ----------------------------------------------------------- every ConfigError of validate.py

# One override per `raise ConfigError` in validate.py that a config can reach; the test
# checks that together they execute every such line, so a new check needs a case here.
BAD_CONFIGS = [
    {'score.knn_k': 0}, {'score.copies': ('rotation',), 'score.balance': 'authors'},
    {'negatives.transforms': ('sobel',), 'score.copies': ('rotation',)},
    {'score.copies': ('rotation', 'rotation')},
    {'score.copies': ('rotation',), 'negatives.weights': 'none'}, {'views.num_views': 3},
    {'views.num_views': 1}, {'head.kind': 'transform', 'negatives.weights': 'none'},
    {'head.kind': 'transform', 'negatives.max_compose': 0},
    {'head.kind': 'transform', 'score.balance': 'authors'},
    {'data.name': 'nope'}, {'autoaug.tau': 0.0}, {'autoaug.num_images': 5},
    {'corruptions.severity': 7}, {'batch_size': 0}, {'data.device_budget_mb': -1},
    {'optim.warmup_epochs': -1}, {'negatives.max_compose': -1}, {'loss.ce_weight': -1.0},
    {'loss.ce_weight': 0.0, 'loss.con_weight': 0.0},
    {'negatives.mixup_lam': (0.8, 0.2)}, {'score.crop_area': 0.0}, {'score.spread_share': 0.0},
    {'data.name': 'arrays'}, {'data.name': 'mvtec'}, {'data.resize': 8},
    {'data.isic_holdout': 1.5}, {'data.categories': ('bottel',)}, {'data.anomaly_dirs': ()},
    {'data.name': 'cifar10', 'data.path': '/data/cifar'},
    {'data.setting': 'unlabeled'},
    {'data.setting': 'labeled', 'data.outlier_sets': ('rest',), 'score.balance': 'authors'},
    {'data.setting': 'labeled', 'data.outlier_sets': ('rest',), 'data.inlier_classes': (1,)},
    {'predict.holdout': 0.9}, {'predict.quantile': 1.0},
    {'corruptions.source': 'tfds', 'data.name': 'digits'},
    {'model.pretrained': '/nowhere.pth'},
    {'model.pretrained': 'PTH', 'model.name': 'resnet18', 'model.stem': 'cifar'},
    {'optim.peak_lr': float('nan')},
    {'report.paper_auroc': (91.0, 0.95, 101.0)},
    {'data.setting': 'unlabeled', 'data.outlier_sets': ('rest',), 'report.paper_auroc': (91.0,)},
]


@pytest.mark.parametrize('field', ['batch_size', 'data.image_size', 'score.batch_size',
                                   'score.spread_share', 'loss.temperature',
                                   'optim.num_epochs'])
def test_a_field_that_must_be_positive_is_named_as_the_user_sets_it(field):
    with pytest.raises(ConfigError, match=rf'^{field} must be positive, got 0'):
        validate.validate_config(tiny_config(**{field: 0}))


def _config_error_lines():
    source = open(validate.__file__).read().splitlines()
    return {i + 1 for i, line in enumerate(source) if 'raise ConfigError' in line}


def test_every_config_error_of_validate_reaches_the_user_as_one_line(tmp_path):
    pth = tmp_path / 'w.pth'
    shutil.copy(os.path.join(ROOT, 'tests/fixtures/torchvision/basic8.pth'), pth)
    hit = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == validate.__file__:
            if event == 'exception' and arg[0] is ConfigError:
                hit.add(frame.f_lineno)
            return tracer
        return None

    for overrides in BAD_CONFIGS:
        overrides = {k: str(pth) if v == 'PTH' else v for k, v in overrides.items()}
        sys.settrace(tracer)
        try:
            with pytest.raises(ConfigError) as e:
                validate.validate_config(tiny_config(**overrides))
        finally:
            sys.settrace(None)
        user_line(e)
    # The data-dependent checks (report.paper_auroc: 3 entries for digits' 10 classes).
    for overrides, kw in (({'data.normal_class': 5}, dict(num_devices=3)),
                          ({'data.normal_class': 5}, dict(num_classes=2)),
                          ({'report.paper_auroc': (91.0, 99.3, 94.4)}, dict(num_classes=10))):
        sys.settrace(tracer)
        try:
            with pytest.raises(ConfigError) as e:
                validate.validate_config(tiny_config(**overrides), **kw)
        finally:
            sys.settrace(None)
        user_line(e)
    # Then launch.py's --classes: a class the dataset lacks, and a sweep that is not one.
    y3 = np.repeat([0, 1, 2], 64)
    for config, y, classes in (
            (tiny_config(**{'data.normal_class': 1}), np.array([0, 0, 2]), None),
            (tiny_config(**{'batch_size': 64, 'data.normal_class': 0}), np.zeros(40, int),
             None),
            (tiny_config(**{'data.normal_class': -1}), y3, [0, 3]),
            (tiny_config(**{'data.normal_class': 1}), y3, [0, 2])):
        sys.settrace(tracer)
        try:
            with pytest.raises(ConfigError) as e:
                validate.check_group_sizes(
                    config, validate.training_groups(config, y, ('a', 'b', 'c'), classes))
        finally:
            sys.settrace(None)
        user_line(e)
    # `_one_of` raises for every enumerated field: one line there covers all of them.
    missed = _config_error_lines() - hit
    assert not missed, f'no case in BAD_CONFIGS reaches validate.py line(s) {sorted(missed)}'
    assert issubclass(ConfigError, errors.UserError)


def _two_checkpoints(workdir):
    """Checkpoints at steps 2 and 4 of a tiny model in workdir; -> (the model's state, the
    step-4 state saved)."""
    import jax
    from unode_jax.training import train as train_lib
    from unode_jax.training.checkpoint import Checkpointer
    state = train_lib.create_train_state(jax.random.key(0), tiny_config(), 16)
    ckpt = Checkpointer(str(workdir), 2)
    for step in (2, 4):
        ckpt.save(step, jax.device_get(state.replace(step=state.step + step)), {'n': step})
    ckpt.close()
    return state


def test_a_checkpoint_of_another_model_stops_without_moving_anything(tmp_path):
    import jax
    from unode_jax.runtime.errors import CheckpointMismatchError
    from unode_jax.training import train as train_lib
    from unode_jax.training.checkpoint import Checkpointer
    state = _two_checkpoints(tmp_path)
    before = tree(tmp_path)
    # The same workdir read with a (K+1)-way head: no checkpoint fits; none is set aside.
    other = train_lib.create_train_state(jax.random.key(0), tiny_config(), 16, num_classes=4)
    ckpt = Checkpointer(str(tmp_path), 2)
    with pytest.raises(CheckpointMismatchError) as e:
        ckpt.restore(other)
    ckpt.close()
    user_line(e, 'no checkpoint in', "restores into this config's model", 'step 4')
    assert tree(tmp_path) == before and not (tmp_path / 'checkpoints_unreadable').exists()
    # The model they were written for restores the newest.
    ckpt = Checkpointer(str(tmp_path), 2)
    restored, meta = ckpt.restore(state)
    assert int(restored.step) == 4 and meta == {'n': 4}
    ckpt.close()


def _files_under(folder, keep):
    return [p for p in folder.rglob('*') if p.is_file() and keep(p)]


def _array_files(step):
    return _files_under(step / 'state', lambda p: p.parent.name == 'd')


def _rewrite(paths, how):
    for p in paths:
        p.write_bytes(how(p.read_bytes()))


# Each damage checkpoint.is_damaged names, made on the newest checkpoint (step 4), and the
# start of the error it raises ('type: message').
DAMAGES = {
    'a truncated array file': (
        lambda step: _rewrite(_array_files(step), lambda b: b[:len(b) // 2]),
        'ValueError: OUT_OF_RANGE:'),
    'a garbled array file': (
        lambda step: _rewrite(_array_files(step), lambda b: bytes(x ^ 0xFF for x in b)),
        'ValueError: DATA_LOSS:'),
    'deleted array files': (
        lambda step: [p.unlink() for p in _array_files(step)], 'ValueError: NOT_FOUND:'),
    'a deleted OCDBT sub-database': (
        lambda step: shutil.rmtree(step / 'state' / 'ocdbt.process_0'),
        'ValueError: FAILED_PRECONDITION:'),
    'a deleted _METADATA': (
        lambda step: (step / 'state' / '_METADATA').unlink(),
        'ValueError: pytree structure error'),
    'garbled JSON': (
        lambda step: (step / 'state' / '_METADATA').write_text('{"tree": '),
        'JSONDecodeError: '),
    'JSON that is not UTF-8': (
        lambda step: (step / 'meta' / 'metadata').write_bytes(b'{"n": "\xff\xfe"}'),
        'UnicodeDecodeError: '),
    'a deleted JSON item file': (
        lambda step: (step / 'meta' / 'metadata').unlink(), 'FileNotFoundError: '),
    'a deleted item folder': (
        lambda step: shutil.rmtree(step / 'state'),
        'KeyError: \'Item "state" was not found in the checkpoint'),
}


@pytest.mark.parametrize('damage', list(DAMAGES))
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_restored(tmp_path, damage,
                                                                        capsys):
    from unode_jax.training.checkpoint import Checkpointer, is_damaged
    state = _two_checkpoints(tmp_path)
    make, raised = DAMAGES[damage]
    make(tmp_path / 'checkpoints' / '4')
    ckpt = Checkpointer(str(tmp_path), 2)
    seen = []
    real = ckpt.manager.restore

    def recording(step, *args, **kwargs):  # what the damage raised, and that it is damage
        try:
            return real(step, *args, **kwargs)
        except Exception as e:
            seen.append((step, f'{type(e).__name__}: {e}', is_damaged(e)))
            raise
    ckpt.manager.restore = recording
    restored, meta = ckpt.restore(state)
    ckpt.close()
    assert len(seen) == 1 and seen[0][0] == 4 and seen[0][2], seen
    assert seen[0][1].startswith(raised), seen
    assert int(restored.step) == 2 and meta == {'n': 2}
    assert os.listdir(tmp_path / 'checkpoints_unreadable') == ['4']
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and out.startswith('checkpoint 4 in ') and 'unreadable' in out


@pytest.mark.parametrize('error', [
    MemoryError(), OSError(5, 'Input/output error'), PermissionError(13, 'Permission denied'),
    ValueError('RESOURCE_EXHAUSTED: Out of memory while reading'),
    ValueError('UNAVAILABLE: the file system did not answer'), RuntimeError('a bug')],
    ids=['out of memory', 'a failed read', 'a permission', "tensorstore's out of memory",
         'an unavailable file system', 'a bug'])
def test_an_error_that_is_not_damage_is_raised_and_nothing_moved(tmp_path, error):
    from unode_jax.training.checkpoint import Checkpointer, is_damaged
    state = _two_checkpoints(tmp_path)
    before = tree(tmp_path)
    assert not is_damaged(error)
    ckpt = Checkpointer(str(tmp_path), 2)
    real = ckpt.manager.restore

    def failing(step, *args, **kwargs):  # the newest fails to read; the one before would not
        if step == 4:
            raise error
        return real(step, *args, **kwargs)
    ckpt.manager.restore = failing
    with pytest.raises(type(error)) as e:
        ckpt.restore(state)
    assert e.value is error
    ckpt.close()
    assert tree(tmp_path) == before and not (tmp_path / 'checkpoints_unreadable').exists()


def test_a_comma_list_for_a_tuple_field_says_how_a_tuple_is_written(tmp_path):
    r = launch('--config=configs/textures.py', f'--workdir={tmp_path / "w"}', '--mode=ablate',
               '--config.ablation.variants=uniform,rotation')
    assert r.returncode != 0 and r.stderr.count('\n') == 1, r.stderr
    assert "entry='uniform,rotation' is not one of" in r.stderr
    assert '''a tuple is written --config.ablation.variants="('a','b')"''' in r.stderr


def test_a_checkpoint_without_a_record_is_not_trained_further(tmp_path):
    """A checkpoint of an earlier version (its metadata holds no record of what it was
    trained on) cannot be checked: resuming it for training stops; scoring it may go on."""
    from unode_jax.runtime import fingerprint
    from unode_jax.training.checkpoint import Checkpointer, resume
    state = _two_checkpoints(tmp_path)  # metadata {'n': step}, as before records
    record = fingerprint.training_record(tiny_config(), np.zeros((8, 16, 16, 3), np.uint8))
    ckpt = Checkpointer(str(tmp_path), 2)
    with pytest.raises(ConfigError) as e:
        resume(ckpt, state, str(tmp_path / 'metrics.jsonl'), record)
    ckpt.close()
    user_line(e, f'{tmp_path} was written without a record of what its model was trained '
                 'on', 'train in a new workdir, or score it as it is with --mode=eval')
    fingerprint.check_record(None, record, str(tmp_path), required=False)  # eval: allowed
