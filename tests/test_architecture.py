"""The import graph of ``geoapp``: no cycles, imports run one way (files/provenance/runtime/angles/allocator ->
data/synth -> model -> retrieval/training/testing -> app and CLIs -> bench), and no private name (``_x``) is imported
from another module.

The graph is read from the source (``ast``), so it also sees imports inside functions; imports under
``if TYPE_CHECKING:`` count for cycles but not for the layers (an annotation may name a type of a higher layer), and
``from pkg import submodule`` depends on the submodule, not on the package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "geoapp"
# layer 0: every layer may import them
BASE = {"geoapp", "geoapp.files", "geoapp.provenance", "geoapp.runtime", "geoapp.angles", "geoapp.allocator",
        "geoapp.search_options"}
CLIS = {"geoapp.train", "geoapp.evaluate", "geoapp.build_db", "geoapp.localize"}
LAYERS = {"data": 1, "synth": 1, "model": 2, "retrieval": 3, "training": 3, "testing": 3, "app": 4, "bench": 5}


def modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        name = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = file
    return out


def imports(mods: dict[str, Path], typing: bool = False) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """Module -> the geoapp modules it imports (``typing``: also under ``if TYPE_CHECKING:``); and every (module,
    private name) imported from another module."""
    edges, private = {}, []
    for name, file in mods.items():
        tree = ast.parse(file.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if (id(node) in typing_only and not typing) or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
                targets = subs + ([module] if len(subs) < len(node.names) else [])
                private += [(name, a.name) for a in node.names if a.name.startswith("_")
                            and not a.name.startswith("__")]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith("geoapp") and target != name:
                    deps.add(target)
        edges[name] = deps
    return edges, private


def layer(module: str) -> int:
    if module in BASE:
        return 0
    if module in CLIS:
        return LAYERS["app"]
    return LAYERS[module.split(".")[1]]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in modules() if m not in BASE and m not in CLIS
                      and m.split(".")[1] not in LAYERS)
    assert not unplaced, f"modules in no layer (add their package to LAYERS): {unplaced}"
    assert (layer("geoapp.files"), layer("geoapp.data.polar"), layer("geoapp.retrieval.engine"), layer("geoapp.train"),
            layer("geoapp.bench.search")) == (0, 1, 3, 4, 5)


def test_no_import_cycles():
    edges, _ = imports(modules(), typing=True)  # an annotation's import still ties two modules together
    assert cycles(edges) == []
    # the check itself finds a planted cycle
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_run_one_way():
    edges, _ = imports(modules())
    upward = sorted((m, d) for m, deps in edges.items() for d in deps if layer(d) > layer(m))
    assert upward == []
    assert "geoapp.retrieval.engine" in edges["geoapp.app.ui"]  # the graph is real: the app imports the engine


def test_no_private_names_cross_modules():
    _, private = imports(modules())
    assert private == []

