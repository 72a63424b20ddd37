"""The import graph keeps the layers of docs/architecture.md: every import points down, and no
modules import each other in a circle. Read from the source with `ast`, so it needs no servers
and sees the imports inside functions too."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The product, bottom to top; a package may import its own layer's modules and those below.
LAYERS: dict[str, int] = {
    "runtime": 0,
    "schemas": 1,
    "topics": 2,
    "cache": 3,
    "sinks": 3,
    "agents": 4,
    "scribe": 5,
}
# Between two packages of one layer, only these directions: sinks/redis writes the key layout
# that cache/ (the readers' client) defines; cache never imports sinks.
SIDEWAYS: frozenset[tuple[str, str]] = frozenset({("sinks", "cache")})
# Developer tooling: may import anything; the product imports none of it, except these lazy
# imports (inside the CLI commands that run the tools, never at module level).
TOOLING = ("devkit", "bench")
LAZY_TOOLING_IMPORTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("scribe.cli.settings", "devkit.stack"),
        ("scribe.cli.dev", "devkit.stack"),
        ("scribe.cli.dev", "devkit.demo"),
        ("scribe.cli.loadgen", "devkit.loadgen.runner"),
        ("scribe.cli.loadgen", "devkit.loadgen.workload"),
        ("scribe.cli.bench", "bench.runner"),
    }
)


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module (the submodule when `from package import submodule`)
    line: int
    module_level: bool  # False: inside a function, runs only when it is called
    type_only: bool  # under `if TYPE_CHECKING:`, never runs

    def __str__(self) -> str:
        where = "module level" if self.module_level else "in a function"
        return f"{self.source} -> {self.target} (line {self.line}, {where})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    node: ast.AST, in_function: bool, type_only: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_only
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(child, True, type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _imports(
                    ast.Module(body=[statement], type_ignores=[]), in_function, True
                )
            for statement in child.orelse:
                yield from _imports(
                    ast.Module(body=[statement], type_ignores=[]), in_function, type_only
                )
        else:
            yield from _imports(child, in_function, type_only)


def import_edges(modules: Mapping[str, Path]) -> list[Edge]:
    """Every import of one of `modules` by one of `modules`."""
    edges = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function, type_only in _imports(tree, False, False):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = source.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    parent = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    parent = node.module or ""
                targets = [
                    f"{parent}.{alias.name}" if f"{parent}.{alias.name}" in modules else parent
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                known = _known(target, modules)
                if known is not None and known != source:
                    edges.append(Edge(source, known, node.lineno, not in_function, type_only))
    return edges


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of `modules` (`import a.b.c` names a.b.c)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def layer_of(module: str, layers: Mapping[str, int]) -> tuple[str, int] | None:
    """The longest prefix of `module` that `layers` names, with its layer."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in layers:
            return prefix, layers[prefix]
    return None


def wrong_way(
    edges: list[Edge],
    layers: Mapping[str, int],
    tooling: tuple[str, ...] = TOOLING,
    sideways: frozenset[tuple[str, str]] = SIDEWAYS,
    lazy_tooling: frozenset[tuple[str, str]] = LAZY_TOOLING_IMPORTS,
) -> list[str]:
    """Imports from the product that point up a layer, sideways, or into the tooling."""
    found = []
    for edge in edges:
        source = layer_of(edge.source, layers)
        if source is None:
            continue  # tooling imports what it likes
        if edge.target.split(".")[0] in tooling:
            if edge.module_level or (edge.source, edge.target) not in lazy_tooling:
                found.append(f"product imports developer tooling: {edge}")
            continue
        target = layer_of(edge.target, layers)
        if target is None:
            continue
        (source_group, source_layer), (target_group, target_layer) = source, target
        if target_layer > source_layer:
            found.append(
                f"upward: {edge} ({source_group} is layer {source_layer}, "
                f"{target_group} layer {target_layer})"
            )
        elif (
            target_layer == source_layer
            and source_group != target_group
            and (source_group, target_group) not in sideways
        ):
            found.append(
                f"sideways: {edge} ({source_group} and {target_group} share layer {source_layer})"
            )
    return found


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """The circles among the imports that run when a module loads (module level, not under
    TYPE_CHECKING): Tarjan's strongly connected components with more than one module."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.module_level and not edge.type_only:
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep import chain cannot hit the recursion limit.
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def describe_cycle(component: list[str], edges: list[Edge]) -> str:
    members = set(component)
    inside = [
        str(e)
        for e in edges
        if e.module_level and not e.type_only and e.source in members and e.target in members
    ]
    return f"{', '.join(component)}: " + "; ".join(sorted(inside))


PACKAGES = (*LAYERS, *TOOLING)


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(source_modules(ROOT, PACKAGES))


def test_every_package_is_read(edges: list[Edge]) -> None:
    """The graph is built from real files: each package has modules, and known imports show."""
    assert {name.split(".")[0] for name in source_modules(ROOT, PACKAGES)} == set(PACKAGES)
    assert (
        Edge(
            "scribe.app",
            "runtime.settings",
            _line_of("scribe/app.py", "runtime.settings"),
            True,
            False,
        )
        in edges
    )


def _line_of(relative: str, text: str) -> int:
    lines = (ROOT / relative).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def test_imports_point_down_the_layers(edges: list[Edge]) -> None:
    found = wrong_way(edges, LAYERS)
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_lazy_tooling_imports_are_still_there(edges: list[Edge]) -> None:
    """Each allowed lazy import names a real import: a stale entry would allow too much."""
    present = {(e.source, e.target) for e in edges if not e.module_level}
    assert present >= LAZY_TOOLING_IMPORTS, LAZY_TOOLING_IMPORTS - present


def test_no_import_cycles(edges: list[Edge]) -> None:
    cycles = import_cycles(edges)
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(
        describe_cycle(component, edges) for component in cycles
    )


def test_checks_can_fail() -> None:
    """The checks find a planted upward import, a lazy one into tooling, and a circle."""
    edges = [
        Edge("runtime.kafka", "topics.catalog", 3, True, False),
        Edge("agents.router.agent", "devkit.stack", 9, False, False),
        Edge("cache.client", "sinks.redis", 4, True, False),
        Edge("sinks.redis", "cache.layout", 5, True, False),
        Edge("a", "b", 1, True, False),
        Edge("b", "c", 1, True, False),
        Edge("c", "a", 1, True, False),
        Edge("c", "d", 1, False, False),
        Edge("d", "c", 1, True, False),
    ]
    found = wrong_way(edges, LAYERS)
    assert len(found) == 3
    assert found[0].startswith("upward: runtime.kafka -> topics.catalog")
    assert found[1].startswith("product imports developer tooling: agents.router.agent")
    assert found[2].startswith("sideways: cache.client -> sinks.redis")
    assert import_cycles(edges) == [["a", "b", "c"]]


def test_cli_broker_choices_match_the_stack() -> None:
    """`scribe stack up --broker` spells the choices itself so that --help needs no devkit."""
    import click

    from devkit.stack import BROKERS
    from scribe.cli.dev import stack_up

    (broker,) = (p for p in stack_up.params if p.name == "broker")
    assert isinstance(broker.type, click.Choice)
    assert tuple(broker.type.choices) == BROKERS
