"""The package's shape (docs/layout.md), checked on its source: no module over 400 lines,
no function over 80, no module importing another's private names, no import cycle
(imports inside functions included), and each sub-package importing only those below it."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'unode_jax')


def _modules():
    """{dotted module name: (path, parsed tree, line count)} of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, '.')
                name = rel[:-len('.__init__')] if rel.endswith('.__init__') else rel
                with open(path) as fh:
                    src = fh.read()
                out[name] = (path, ast.parse(src), len(src.splitlines()))
    return out


MODULES = _modules()


def _imports(tree):
    """(module, name) of every `from unode_jax... import name` in tree, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('unode_jax'):
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('unode_jax'):
                    yield alias.name, None


# The packaged configs are data: a get_config() is one documented field per line, so its
# length is the number of fields, not logic (configs/default.py defines them all).
CONFIGS = 'unode_jax.configs'


def test_module_and_function_sizes():
    long_modules = {name: n for name, (_, _, n) in MODULES.items() if n > 400}
    long_functions = {f'{name}.{node.name}': node.end_lineno - node.lineno + 1
                      for name, (_, tree, _) in MODULES.items()
                      if not name.startswith(CONFIGS) for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 80}
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_no_private_names_across_modules():
    private = [(name, f'{module}.{imported}') for name, (_, tree, _) in MODULES.items()
               for module, imported in _imports(tree)
               if imported and imported.startswith('_') and f'{module}.{imported}' not in MODULES]
    assert not private, private


def _edges():
    """{module: the package modules it imports}."""
    edges = {}
    for name, (_, tree, _) in MODULES.items():
        targets = set()
        for module, imported in _imports(tree):
            full = f'{module}.{imported}' if imported else module
            targets.add(full if full in MODULES else module)
        edges[name] = {t for t in targets if t in MODULES and t != name}
    return edges


def find_cycles(edges):
    """Every cycle a depth-first walk of edges ({node: successors}) closes."""
    state, cycles = {}, []

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 'open':
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 'done'

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycle():
    assert not find_cycles(_edges())


# The sub-packages from the bottom up: each imports only those before it. The top-level
# modules (run.py, detector.py, trained.py, plan.py, validate.py, ...) import any of them.
LAYERS = ('runtime', 'torch_io', 'data', 'models', 'augment', 'training', 'evaluation',
          'serving')


def layer(module):
    """The sub-package of a module (its index in LAYERS), len(LAYERS) for the top level."""
    parts = module.split('.')
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def upward_imports(edges):
    """The imports of a module from a sub-package above its own."""
    return sorted(f'{a} -> {b}' for a, targets in edges.items() for b in targets
                  if layer(b) > layer(a))


def test_sub_packages_import_only_those_below():
    assert {name.split('.')[1] for name in MODULES if name.count('.') >= 1} >= set(LAYERS)
    assert not upward_imports(_edges())


def test_the_checks_catch_what_they_look_for():
    assert layer('unode_jax.models') == layer('unode_jax.models.clip') == LAYERS.index('models')
    assert layer('unode_jax.run') == layer('unode_jax') == len(LAYERS)
    assert upward_imports({'unode_jax.runtime.files': {'unode_jax.evaluation.score'},
                           'unode_jax.run': {'unode_jax.runtime.files'}}) == [
        'unode_jax.runtime.files -> unode_jax.evaluation.score']
    assert {'unode_jax.run', 'unode_jax.training.train', 'unode_jax.data.datasets'} <= set(MODULES)
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert find_cycles({'a': {'b'}, 'b': set()}) == []
    tree = ast.parse('def f():\n    from unode_jax.data.datasets import _secret\n')
    assert list(_imports(tree)) == [('unode_jax.data.datasets', '_secret')]
