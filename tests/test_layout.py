"""The shape of the package, kept by a test: no import circle, no module importing the program
above it, small modules and functions, `train.py` only the program.

The import graph is read from the source (`ast`), counting imports anywhere in a module,
function-level ones included: a lazy import hides a circle from Python, not from this test.
"""

import ast
import os

import pytest

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "rawtf_ae")
# The program layer: modules that run a whole job. Nothing below may import them.
PROGRAM = {"cli", "train", "workdir"}
MAX_MODULE_LINES = 400
MAX_TRAIN_LINES = 350
MAX_FUNCTION_LINES = 80
# Listings of config keys with their defaults and comments, long by nature.
LONG_BY_NATURE = {("config", "default_config")}


def _modules():
    return sorted(name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py") and name != "__init__.py")


def _tree(module):
    with open(os.path.join(PACKAGE, f"{module}.py")) as f:
        return ast.parse(f.read())


def _imports(module):
    """The rawtf_ae modules `module` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "rawtf_ae":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("rawtf_ae."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("rawtf_ae."))
    return found & set(_modules())


def test_the_import_graph_has_no_circle():
    graph = {module: _imports(module) for module in _modules()}
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            circle = path[path.index(module) :] + [module]
            pytest.fail(f"import circle: {' -> '.join(circle)}")
        state[module] = "open"
        for imported in sorted(graph[module]):
            visit(imported, path + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


def test_no_module_imports_the_program_above_it():
    for module in sorted(set(_modules()) - PROGRAM):
        upward = _imports(module) & PROGRAM
        assert not upward, f"rawtf_ae/{module}.py imports the program module(s) {sorted(upward)}"


def test_modules_and_functions_stay_small():
    for module in _modules():
        with open(os.path.join(PACKAGE, f"{module}.py")) as f:
            lines = len(f.read().splitlines())
        limit = MAX_TRAIN_LINES if module == "train" else MAX_MODULE_LINES
        assert lines <= limit, f"rawtf_ae/{module}.py has {lines} lines (at most {limit})"
        for node in ast.walk(_tree(module)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if (module, node.name) not in LONG_BY_NATURE:
                    assert length <= MAX_FUNCTION_LINES, f"{module}.{node.name} has {length} lines"


def test_train_py_is_the_program_only():
    # The step, the loop, the state and the optimizer are built elsewhere; train.py assembles.
    defined = {node.name for node in _tree("train").body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for piece in ("make_train_step", "make_step", "make_train_loop", "create_optimizer", "create_model"):
        assert piece not in defined, f"train.py defines {piece}"
    assert "train_and_evaluate" in defined
