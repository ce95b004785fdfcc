"""Every module imports on its own, and no two modules import each other (directly or not).

A cycle "works" only in some import orders, which is how deferred imports inside functions
creep in; importing each module alone in a fresh interpreter finds the orders that break.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import userboard

PACKAGE = userboard.__name__
MODULES = sorted(
    [PACKAGE] + [m.name for m in pkgutil.walk_packages(userboard.__path__, f"{PACKAGE}.")]
)


def module_path(name: str) -> Path:
    """The source file of module `name`, found without importing it."""
    base = Path(userboard.__file__).parent.joinpath(*name.split(".")[1:])
    package = base / "__init__.py"
    return package if package.exists() else base.with_suffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(name: str, tree: ast.AST) -> set[str]:
    """The package's modules that module `name` imports anywhere (functions included).

    Imports under `if TYPE_CHECKING:` are left out: they never run.
    """
    is_package = module_path(name).name == "__init__.py"
    parts = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            # `from . import users` imports the module userboard.users
            found.update(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES and m != name}


def import_graph() -> dict[str, set[str]]:
    return {
        name: imported_modules(name, ast.parse(module_path(name).read_text(), str(module_path(name))))
        for name in MODULES
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` as [a, b, ..., a], or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def walk(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return path[path.index(target):] + [target]
            if target not in done:
                cycle = walk(target)
                if cycle:
                    return cycle
        on_path.discard(node)
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


def fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def third_party_imports() -> list[str]:
    """The other packages' modules that the package's modules import when they are imported
    (module level, not inside functions, not under TYPE_CHECKING)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or (
                isinstance(node, ast.If) and _is_type_checking(node.test)):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for name in MODULES:
        visit(ast.parse(module_path(name).read_text()))
    return sorted(m for m in found if m.split(".")[0] not in (PACKAGE, "__future__"))


# Imports the other packages, then forks one child per package module; each child imports its
# module and reports the traceback, if any. Input: [modules, preload] as JSON on stdin.
FORKING_IMPORTER = """
import importlib, json, os, sys, traceback
modules, preload = json.load(sys.stdin)
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # the package module that imports it fails on its own below
assert not [m for m in sys.modules if m.split(".")[0] == modules[0]], "a package module is loaded"
failures = {}
for name in modules:
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ""
        except BaseException:
            message = traceback.format_exc()
        with os.fdopen(write, "w") as out:
            out.write(message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        failures[name] = answer.read()
    os.wait()
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, str]:
    """For every package module: the traceback of `import NAME` as the first package module a
    process imports ("" if it imported).

    Each import runs in a process of its own, forked from one interpreter that has imported the
    other packages the package imports at module level but no package module: the package's
    own import order, which is where cycles break, is a fresh interpreter's, and flask,
    sqlalchemy and the rest load once instead of once per module (a second each).
    """
    done = subprocess.run([sys.executable, "-c", FORKING_IMPORTER], capture_output=True, text=True,
                          input=json.dumps([MODULES, third_party_imports()]), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_package_modules_are_all_found():
    assert {"userboard.app", "userboard.extension", "userboard.web", "userboard.bench.runner"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(name, imported_alone):
    assert imported_alone[name] == ""


def test_no_import_cycle_among_the_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_imports_inside_functions():
    """Guard the guard: a deferred import back into the factory counts as an edge."""
    tree = ast.parse("def view():\n    from ..app import create_app\n")
    assert imported_modules("userboard.web", tree) == {"userboard.app"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_capture_and_events_import_no_flask():
    result = fresh_python(
        "import sys, userboard.capture, userboard.events; "
        "print(sorted(m for m in sys.modules if m == 'flask' or m.startswith('flask.')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
