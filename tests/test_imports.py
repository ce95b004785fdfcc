"""Every module imports on its own, and no two modules import each other (directly or not).

A cycle "works" only in some import orders, which is how deferred imports inside functions
creep in; importing each module alone in a fresh interpreter finds the orders that break.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, subprocess.CompletedProcess]:
    """`import NAME` for every module, each in a fresh interpreter, several at a time.

    Each interpreter spends most of its second waiting on the disk and the other worker, so
    running them side by side takes a fraction of the time of one after the other.
    """
    with ThreadPoolExecutor(max_workers=6) as pool:
        done = pool.map(lambda name: fresh_python(f"import {name}"), MODULES)
        return dict(zip(MODULES, done, strict=True))


def test_the_package_modules_are_all_found():
    assert {"userboard.app", "userboard.extension", "userboard.web", "userboard.bench.runner"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(name, imported_alone):
    result = imported_alone[name]
    assert result.returncode == 0, result.stderr


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
