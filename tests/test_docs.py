"""The README stays a short front page, and every relative Markdown link in it and in docs/
points at a file that exists."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_README_LINES = 300

# [text](target), target without spaces; an optional "title" after it is dropped.
LINK = re.compile(r'\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
EXTERNAL = ('http://', 'https://', 'mailto:')


def markdown_files():
    return [os.path.join(ROOT, 'README.md')] + sorted(
        glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def prose(text):
    """The text outside fenced code blocks and inline code spans (links there are not
    links)."""
    out, in_fence = [], False
    for line in text.split('\n'):
        if line.lstrip().startswith('```'):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append(re.sub(r'`[^`]*`', '', line))
    return '\n'.join(out)


def relative_links(path):
    text = open(path, encoding='utf-8').read()
    return [t for t in LINK.findall(prose(text)) if not t.lower().startswith(EXTERNAL)]


def test_the_link_pattern():
    text = ('[a](docs/x.md) [b](../y.py#L3) [c](#here) [d](https://e.org/f) `[g](no.md)`\n'
            '```\n[h](no.md)\n```\n[i](<sp.md> "title")')
    assert LINK.findall(prose(text)) == ['docs/x.md', '../y.py#L3', '#here',
                                         'https://e.org/f', 'sp.md']


def test_docs_exist():
    pages = markdown_files()[1:]
    assert pages, 'no docs/*.md'
    for page in pages:
        first = open(page, encoding='utf-8').readline()
        assert first.startswith('# '), f'{page} does not start with a "# Title" line'


def test_every_relative_link_resolves():
    broken = []
    for path in markdown_files():
        for target in relative_links(path):
            file_part = target.split('#', 1)[0]
            if not file_part:  # an anchor in the same file
                continue
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            if not os.path.exists(resolved):
                broken.append(f'{os.path.relpath(path, ROOT)}: ({target})')
    assert not broken, 'links to missing files:\n' + '\n'.join(broken)


def test_readme_is_short():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        n = sum(1 for _ in f)
    assert n <= MAX_README_LINES, f'README.md has {n} lines; move sections to docs/'


def test_the_configs_that_hold_images_out_are_the_ones_usage_md_names():
    """docs/usage.md names every config whose predict.holdout is not 0, with its value."""
    import importlib
    from unode_jax.config_files import packaged_configs
    text = ' '.join(open(os.path.join(ROOT, 'docs', 'usage.md'), encoding='utf-8').read().split())
    stated = {}
    for value, names in re.findall(r'holdout (\d\.\d+) in ((?:`\w+\.py`(?:, )?)+)', text):
        for name in re.findall(r'`(\w+)\.py`', names):
            stated[name] = float(value)
    actual = {}
    for name in packaged_configs():
        if name != 'saved':
            holdout = importlib.import_module(f'unode_jax.configs.{name}').get_config().predict.holdout
            if holdout:
                actual[name] = holdout
    assert stated == actual
