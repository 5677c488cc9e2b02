"""The shape of the code: the import graph of ``boltraft/`` and ``cli/`` (every import
statement counts, ``TYPE_CHECKING`` and function-level ones included) has no circle, and its
layers point one way: ``cli -> backup -> client | server -> storage, transport -> raft ->
errors``; the tool packages ``boltraft.benchmark`` and ``boltraft.chaos`` may import anything,
and only ``cli`` (besides tests and the bench scripts) imports them; ``boltraft/__main__.py``
(``python -m boltraft``) only launches ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> layer; an import must go to a lower layer or stay inside its package
LAYERS = {
    "errors": 0,
    "packing": 0,
    "raft": 1,
    "storage": 2,
    "transport": 2,
    "server": 3,
    "client": 3,
    "backup": 4,
    "benchmark": 5,  # may import anything (no circle); imported by cli only
    "chaos": 5,  # likewise
    "cli": 5,
    "__main__": 6,  # ``python -m boltraft``: the command line's launcher, above it
}


# the tool packages: each may import anything in boltraft, and only cli imports it
TOOLS = ({"cli", "benchmark"}, {"cli", "chaos"})


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "cli":
        parts[0] = "boltraft_cli"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a ``from pkg import name`` of a submodule
    counts as that submodule)."""
    files = [*ROOT.glob("boltraft/**/*.py"), *ROOT.glob("cli/*.py")]
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import sub`` imports the submodule sub (as the import tool does)
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in modules] or [node.module]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.split(".")[0] in ("boltraft", "boltraft_cli"):
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return "cli" if parts[0] == "boltraft_cli" else (parts[1] if len(parts) > 1 else "")


def test_the_import_graph_has_no_circle() -> None:
    assert cycles(import_graph()) == []


def test_layers_point_one_way() -> None:
    wrong = []
    for module, deps in import_graph().items():
        if module == "boltraft":
            continue
        mine = _package(module)
        for dep in deps:
            theirs = _package(dep)
            if dep == "boltraft" or theirs == mine or {mine, theirs} in TOOLS:
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_the_checks_see_a_circle_and_a_wrong_layer() -> None:
    graph = {"boltraft.raft.a": {"boltraft.raft.b"}, "boltraft.raft.b": {"boltraft.raft.a"}}
    assert cycles(graph) == [["boltraft.raft.a", "boltraft.raft.b"]]
    assert _package("boltraft.server.node") == "server" and LAYERS["benchmark"] > LAYERS["server"]
    assert _package("boltraft_cli.bench") == "cli"
    assert "boltraft.server.node" in import_graph()["boltraft.server.main"]
