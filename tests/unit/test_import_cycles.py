"""No import cycles among the project's modules (``alliance``, ``settlement``, ``partners_sdk``).

An edge A → B means A imports B (or a name from B) anywhere in its source: at module
level and also inside a function. Imports inside functions count because they are how
cycles were hidden here: ``settlement_closing`` imported ``finance`` inside
``close_cycle`` while ``finance`` imported ``settlement_closing`` at the top, and the
metrics collector, which the database layer imports, imported the scheduler and the
settlement services at scrape time. Deferring an import changes when a cycle bites
(half-initialised modules, import order that matters), not whether the two modules
depend on each other, so a deferred import is an edge like any other; a function-level
import remains fine where it is only about start-up cost (the CLI loads its command
groups lazily), as long as it closes no cycle.

Imports under ``if TYPE_CHECKING:`` are not edges: they never execute, and a name they
bring in can only appear in annotations (used at run time it would fail with a
NameError), so they cannot hide a run-time dependency. They let two types name each
other (an SDK error that carries the purchase it refused, the drainer and the client it
drains); the layering test still reads them, so they cannot smuggle in a forbidden layer.

A package is not an edge of its submodules: Python runs ``pkg/__init__.py`` before
``pkg.mod``, but ``pkg.mod`` depends on the package's own code only when it imports a
name from it (``from pkg import x``), which is an edge.
"""

from __future__ import annotations

import pytest

from tests.import_support import imports_of, project_modules, project_target


def import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports at run time (module or function level)."""
    graph: dict[str, set[str]] = {}
    for module, path in project_modules().items():
        targets = {project_target(found.target) for found in imports_of(path) if not found.type_checking}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, as a path back to its start."""
    return [_path_through(component, graph) for component in entangled(graph)]


def entangled(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: each module in one reaches every other."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(module: str) -> None:
        index[module] = lowlink[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                connect(target)
                lowlink[module] = min(lowlink[module], lowlink[target])
            elif target in on_stack:
                lowlink[module] = min(lowlink[module], index[target])
        if lowlink[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(component)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return components


def _path_through(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph[module] & component):
                if target == start:
                    return paths[module] + [start]
                if target not in paths:
                    paths[target] = paths[module] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component of two or more always has one


def test_no_import_cycles():
    graph = import_graph()
    found = [f"{' -> '.join(_path_through(component, graph))}\n  (entangled: {', '.join(sorted(component))})"
             for component in entangled(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_check_finds_cycles(graph, expected):
    # Guard against a check that passes because it finds nothing.
    assert cycles(graph) == expected


def test_the_graph_sees_function_level_imports():
    # alliance.cli builds the app on demand, importing the factory inside a function.
    assert "alliance.app" in import_graph()["alliance.cli"]
