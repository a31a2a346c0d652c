"""The package as a user installs it: a wheel built from pyproject.toml, installed into a
fresh virtual environment, run from a folder that is not the repository: the quick start's
one-class command through the `unode-jax` command and the README's Python API example.

The virtual environment sees this interpreter's site-packages (--system-site-packages) and
pip installs with --no-index: the wheel's dependency ranges must be met by the installed
lock (requirements.txt), nothing is downloaded, and the package itself comes only from the
wheel (checked: not from the repository)."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests import children
from tests.test_readme import api_example

ROOT = children.ROOT


def _environment(directory):
    """The environment a user's shell has: no PYTHONPATH pointing at the repository."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    return dict(env, PWD=str(directory))


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(the venv's python, its unode-jax command, a folder outside the repository)."""
    if importlib.util.find_spec('setuptools') is None:
        pytest.skip('setuptools is not installed: the wheel is built without build isolation '
                    '(offline), from the installed setuptools')
    tmp = tmp_path_factory.mktemp('package')
    src = tmp / 'src'  # A copy: the build writes build/ and *.egg-info beside its sources.
    src.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, 'unode_jax'), src / 'unode_jax',
                    ignore=shutil.ignore_patterns('__pycache__'))
    r = children.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                      '--no-index', '-q', str(src), '-w', str(tmp / 'wheel')])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (wheel,) = (tmp / 'wheel').iterdir()
    names = zipfile.ZipFile(wheel).namelist()
    assert 'unode_jax/configs/digits.py' in names and 'unode_jax/cli.py' in names
    assert not [n for n in names if n.startswith(('configs/', 'tests/', 'benchmarks/'))]
    r = children.run([sys.executable, '-m', 'venv', '--system-site-packages', str(tmp / 'venv')])
    assert r.returncode == 0, r.stderr[-3000:]
    python, command = tmp / 'venv' / 'bin' / 'python', tmp / 'venv' / 'bin' / 'unode-jax'
    r = children.run([str(python), '-m', 'pip', 'install', '--no-index', '-q', str(wheel)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    elsewhere = tmp / 'elsewhere'
    elsewhere.mkdir()
    r = children.run([str(python), '-c', 'import unode_jax; print(unode_jax.__file__)'],
                     cwd=elsewhere, env=_environment(elsewhere))
    assert r.returncode == 0 and r.stdout.startswith(str(tmp / 'venv')), r.stdout + r.stderr
    return python, command, elsewhere


@pytest.mark.slow
def test_the_command_trains_a_packaged_config_from_another_folder(installed):
    _, command, elsewhere = installed
    r = children.run([str(command), '--config=digits', '--workdir=run',
                      '--config.data.normal_class=1'], cwd=elsewhere, env=_environment(elsewhere))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    row = re.search(r'^\s+1\s+1\s+(\d+\.\d\d)\s', r.stdout, re.M)
    assert row and float(row.group(1)) > 90, r.stdout[-3000:]
    assert os.path.isfile(elsewhere / 'run' / 'bank.npz')
    # A name that is neither a file nor a packaged config: one line naming the packaged ones.
    r = children.run([str(command), '--config=digitz', '--workdir=bad'], cwd=elsewhere,
                     env=_environment(elsewhere))
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'digits, ' in r.stderr, r.stderr


@pytest.mark.slow
def test_the_readme_api_example_runs_from_the_installed_package(installed, tmp_path):
    python, _, elsewhere = installed
    code = api_example().replace('/tmp/unode_digits_1', str(tmp_path / 'export'))
    r = children.run([str(python), '-c', code], cwd=elsewhere, env=_environment(elsewhere))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert float(re.search(r'AUROC (\d+\.\d)', r.stdout).group(1)) > 90, r.stdout
    assert os.path.isfile(tmp_path / 'export' / 'model.json')
    assert not subprocess.run(['git', 'status', '--porcelain', '--ignored', 'build'],
                              cwd=ROOT, capture_output=True, text=True).stdout  # no build/ here
