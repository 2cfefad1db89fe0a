"""The import structure of `engine/`: no import cycles, and no import that runs up a layer.

Every `import` in every module counts, at module level and inside functions (an import
hidden in a function is still a dependency). Imports under `if TYPE_CHECKING:` count as
well. The layer table below describes the tree as it is now (issue 16 restructures it;
change the table together with the tree). A module the table does not place fails the
test: a newcomer is placed on purpose, not by accident.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import engine

ENGINE_DIR = Path(engine.__file__).resolve().parent

# Lowest first. A module may import its own layer and the layers before it. An entry
# names a module or a package (the package covers everything under it); the longest
# matching entry wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",  # settings, errors and small libraries every layer uses; stdlib and pip only
        ("engine", "engine.errors", "engine.config", "engine.support"),
    ),
    ("model", ("engine.model",)),  # records that travel between the layers, no I/O
    (
        "core",  # pure logic: rules, pack metadata, outbound policy, secrets, workflows
        (
            "engine.rules",
            "engine.packs",
            "engine.outbound",
            "engine.secrets",
            "engine.workflows",  # Orquesta: spec, expressions, inspection, conductor
        ),
    ),
    ("store", ("engine.store",)),
    ("ingest", ("engine.ingest",)),  # request bodies, the ingest writer child, its pressure
    ("runners", ("engine.runners",)),
    ("process", ("engine.process",)),  # what a running process holds, and its reload
    ("workers", ("engine.workers",)),  # the roles, incl. the rules role's evaluator children
    ("surfaces", ("engine.http", "engine.cli", "engine.__main__")),
]

# Upward imports known and not yet removed: (importer, imported) -> why. Each is a TODO
# for the restructure of issue 16; do not add to this list without one.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _engine_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ENGINE_DIR.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The engine module `name` is in (a name imported from a module is that module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported engine module, line) for every import statement in the module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # `from engine.http import auth` imports the module engine.http.auth.
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "engine" or target.startswith("engine."):
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != module:
                    found.append((resolved, node.lineno))
    return found


@functools.cache
def _graph() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line}."""
    modules = _engine_modules()
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in modules.items():
        graph[module]  # every module is a node, importing or not
        for target, line in _imports(module, path, modules):
            graph[module].setdefault(target, line)
    return graph


def _layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching entry, layer index)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            covers = module == entry or (entry != "engine" and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _one_cycle(component: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """One closed import path through `component`, to show in the failure."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        following = sorted(t for t in graph[path[-1]] if t in members)
        if start in following and len(path) > 1:
            return [*path, start]
        fresh = [t for t in following if t not in seen]
        if not fresh:  # walked into a side loop: show where it closes
            closing = following[0]
            return [*path[path.index(closing) :], closing]
        path.append(fresh[0])
        seen.add(fresh[0])


def _file(module: str) -> str:
    path = _engine_modules()[module]
    return str(path.relative_to(ENGINE_DIR.parent))


def test_the_walk_sees_the_engine_imports() -> None:
    graph = _graph()
    assert len(graph) > 100
    # One module-level and one relative-free import the walk must find.
    assert "engine.http.context" in graph["engine.http.app"]
    assert "engine.errors" in graph["engine.config"]


def test_every_engine_module_is_in_a_layer() -> None:
    unplaced = sorted(m for m in _graph() if _layer_of(m) is None)
    assert not unplaced, (
        f"modules in no layer: {', '.join(unplaced)}; add each to LAYERS in "
        "tests/unit/test_architecture.py (its docstring says how)"
    )


def test_no_import_cycles() -> None:
    graph = _graph()
    problems = []
    for component in _cycles(graph):
        cycle = _one_cycle(component, graph)
        steps = " -> ".join(f"{_file(m)}" for m in cycle)
        problems.append(f"{len(component)} modules import each other, e.g. {steps}")
    assert not problems, "import cycles in engine/:\n" + "\n".join(problems)


def test_no_import_runs_up_a_layer() -> None:
    graph = _graph()
    names = [name for name, _ in LAYERS]
    problems = []
    for importer, targets in sorted(graph.items()):
        low = _layer_of(importer)
        for target, line in sorted(targets.items()):
            high = _layer_of(target)
            if low is None or high is None or high <= low:
                continue
            if (importer, target) in ALLOWED_UPWARD:
                continue
            problems.append(
                f"{_file(importer)}:{line} ({names[low]}) imports {target} ({names[high]})"
            )
    assert not problems, "imports that run up a layer:\n" + "\n".join(problems)


def test_the_allowances_are_still_needed() -> None:
    graph = _graph()
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in graph.get(pair[0], {})]
    assert not stale, f"remove these from ALLOWED_UPWARD, the imports are gone: {stale}"


def test_every_folder_of_modules_is_a_regular_package():
    # setuptools' find_packages leaves out a folder without __init__.py, so a wheel would
    # lack its modules although they import fine from a checkout (a namespace package).
    missing = sorted(
        str(folder.relative_to(ENGINE_DIR.parent))
        for folder in {path.parent for path in ENGINE_DIR.rglob("*.py")}
        if not (folder / "__init__.py").exists()
        and "__pycache__" not in folder.parts
        # Built-in packs' action scripts are package data (pyproject), run as entry points.
        and not folder.is_relative_to(ENGINE_DIR / "packs" / "builtin")
    )
    assert missing == []
