"""The README's Python API example runs as written (its export folder moved into the
test's temporary folder)."""
import pytest
import os
import re
import sys

from tests import children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def api_example():
    text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    section = text[text.index('### Python API'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path):
    code = api_example()
    assert 'Detector(' in code and 'exported.load(' in code and '.export(' in code
    code = code.replace('/tmp/unode_digits_1', str(tmp_path / 'export'))
    r = children.run([sys.executable, '-c', code])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    auroc = float(re.search(r'AUROC (\d+\.\d)', r.stdout).group(1))
    assert auroc > 90, r.stdout  # digits class 1 against the other nine
    # The counts the README quotes are the ones the example prints (the AUROC may differ
    # in its last digit on another CPU; the steps and images do not).
    counts = r'(\d+) steps on (\d+) images, (\d+) held out'
    text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    quoted = re.search('It printed `AUROC .*?' + counts, text, re.S)
    assert quoted and quoted.groups() == re.search(counts, r.stdout).groups(), r.stdout
    assert sorted(os.listdir(tmp_path / 'export')) == ['arrays.npz', 'model.jax', 'model.json']
