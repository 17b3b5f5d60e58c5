"""The shape of the package, kept by a test (docs/layout.md).

- `rawtf_ae/` holds its parts as subpackages, and besides them only `__init__.py` and the base
  `files.py`.
- Every import between rawtf_ae modules points down the parts' order, lazy (function-level)
  imports included: a lazy import hides an upward edge from Python, not from this test.
  Modules of one part import each other freely, without a circle; parts of one level
  (`models` and `optim`, `training` and `serving`) do not import each other.
- One home per name: `from rawtf_ae.X import name` takes `name` from the module that defines
  it, in the package, the tests, the benchmarks and the configs alike (the package root's lazy
  names excepted).
- Modules and functions stay small; `program/train.py` assembles, it defines no step or loop.

The graph is read from the source (`ast`), never by importing it.
"""

import ast
import os
import shutil

import pytest

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "rawtf_ae")
# Each part's level: a module may import the base and the parts of lower levels, and its own part.
LEVELS = {
    "files": 0,
    "models": 1,
    "optim": 1,
    "recommender": 2,
    "data": 3,
    "training": 4,
    "serving": 4,
    "config": 5,
    "program": 6,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# Listings of config keys with their defaults and comments, long by nature.
LONG_BY_NATURE = {("rawtf_ae.config.defaults", "default_config")}


def _modules(package=PACKAGE):
    """`{"rawtf_ae.models.dense": path, ...}`: every module of the package, `__init__`s included."""
    found = {}
    root = os.path.dirname(package)
    for folder, _, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _tree(path):
    with open(path) as f:
        return ast.parse(f.read())


def _imports(path, modules):
    """`[(line, imported module)]`: every rawtf_ae module `path` imports, anywhere in its source.

    `from rawtf_ae.x import y` counts `rawtf_ae.x.y` when that is a module, else `rawtf_ae.x`.
    """
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rawtf_ae":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((node.lineno, submodule if submodule in modules else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rawtf_ae"]
    return found


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(package=PACKAGE):
    """Every import that breaks the parts' order, as one line each."""
    modules = _modules(package)
    found = []
    for module, path in sorted(modules.items()):
        if module == "rawtf_ae":
            continue  # the root: its lazy names reach every part
        here = _part(module)
        for line, imported in _imports(path, modules):
            there = _part(imported)
            where = f"{os.path.relpath(path, os.path.dirname(package))}:{line}"
            if imported == "rawtf_ae":
                # A part's __init__ forwards an old flat module's names through the root's hook.
                if not (module in ("rawtf_ae.config", "rawtf_ae.data") and path.endswith("__init__.py")):
                    found.append(f"{where} imports the package root")
            elif imported not in modules:
                found.append(f"{where} imports {imported}, which is no module")
            elif there != here and LEVELS[there] >= LEVELS[here]:
                found.append(f"{where}: {here} (level {LEVELS[here]}) imports {imported} (level {LEVELS[there]})")
    return found


def test_the_package_root_holds_only_the_parts_the_base_and_the_init():
    entries = {name for name in os.listdir(PACKAGE) if name != "__pycache__"}
    assert entries == {"__init__.py", "files.py", *(part for part in LEVELS if part != "files")}
    for part in LEVELS:
        if part != "files":
            assert os.path.exists(os.path.join(PACKAGE, part, "__init__.py")), part


def test_every_import_points_down_the_parts_order():
    assert violations() == []


@pytest.mark.parametrize(
    "module, planted",
    [
        ("models/activations.py", "from rawtf_ae.program import train"),  # upward
        ("serving/tflite.py", "from rawtf_ae.training import steps"),  # a sibling of its level
        ("training/losses.py", "import rawtf_ae.config.checks"),  # upward, the other syntax
        ("files.py", "from rawtf_ae.models import dense"),  # the base imports nothing
    ],
)
def test_a_planted_upward_import_is_caught_lazy_ones_too(tmp_path, module, planted):
    copy = tmp_path / "rawtf_ae"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a") as f:
        f.write(f"\n\ndef _planted():\n    {planted}  # lazy: inside a function\n")
    found = violations(str(copy))
    assert len(found) == 1 and found[0].startswith(f"rawtf_ae/{module}:"), found


def test_the_modules_of_each_part_import_each_other_without_a_circle():
    modules = _modules()
    graph = {m: {i for _, i in _imports(p, modules) if i != m} for m, p in modules.items() if m != "rawtf_ae"}
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            pytest.fail(f"import circle: {' -> '.join(path[path.index(module) :] + [module])}")
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            # A module's import of its own package's __init__ is no edge back (Python loads it first).
            if not module.startswith(imported + "."):
                visit(imported, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def _defined(path):
    names = set()
    for node in _tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


# The one file that imports the old flat paths on purpose: it tests that they still work.
OLD_PATHS_TESTED = os.path.join(REPO, "tests", "end_to_end", "test_package.py")


def _python_files():
    for top in ("rawtf_ae", "tests", "benchmarks", "configs"):
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            paths = (os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))
            yield from (path for path in paths if path != OLD_PATHS_TESTED)
    yield os.path.join(REPO, "train.py")


def test_every_name_is_imported_from_the_module_that_defines_it():
    modules = _modules()
    root_names = _defined(modules["rawtf_ae"]) | set(ast.literal_eval(_public_names()))
    wrong = []
    for path in _python_files():
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rawtf_ae")):
                continue
            for alias in node.names:
                name, where = alias.name, f"{os.path.relpath(path, REPO)}:{node.lineno}"
                if node.module == "rawtf_ae":
                    if name not in root_names and f"rawtf_ae.{name}" not in modules:
                        wrong.append(f"{where}: rawtf_ae has no {name}")
                elif node.module not in modules:
                    wrong.append(f"{where}: {node.module} is no module (an old flat path?)")
                elif f"{node.module}.{name}" not in modules and name not in _defined(modules[node.module]):
                    wrong.append(f"{where}: {name} is not defined in {node.module}")
    assert wrong == []


def _public_names():
    """The keys of the root's `_PUBLIC` table, as source text."""
    for node in _tree(os.path.join(PACKAGE, "__init__.py")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_PUBLIC" for t in node.targets):
            return repr([key.value for key in node.value.keys])
    raise AssertionError("rawtf_ae/__init__.py has no _PUBLIC table")


def test_modules_and_functions_stay_small():
    for module, path in _modules().items():
        with open(path) as f:
            lines = len(f.read().splitlines())
        assert lines <= MAX_MODULE_LINES, f"{path} has {lines} lines (at most {MAX_MODULE_LINES})"
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if (module, node.name) not in LONG_BY_NATURE:
                    assert length <= MAX_FUNCTION_LINES, f"{module}.{node.name} has {length} lines"


def test_the_program_assembles_and_defines_no_step_or_loop():
    tree = _tree(os.path.join(PACKAGE, "program", "train.py"))
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for piece in ("make_train_step", "make_step", "make_train_loop", "create_optimizer", "create_model"):
        assert piece not in defined, f"program/train.py defines {piece}"
    assert "train_and_evaluate" in defined
