"""The ``avafn`` package has no import cycle.

The graph: one node per module of ``src/avafn``; an edge A → B for every ``import B`` /
``from B import name`` in A (and A → B.name when ``B.name`` is itself a module), at module
level **and** inside functions, since a function-level import still runs B when A's function
is called. Parent packages are not implicit edges: ``avafn.x.y`` importing ``avafn.x.z`` does
not count as importing ``avafn.x``'s ``__init__``. ``if TYPE_CHECKING:`` blocks are skipped
(they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx  # a dependency of torch

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / "avafn").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, is_pkg: bool) -> list[str]:
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            found.append(base)
            found.extend(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = SRC) -> nx.DiGraph:
    mods = _modules(root)
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for target in _imports(tree, name, path.name == "__init__.py"):
            if target in mods and target != name:
                g.add_edge(name, target)
    return g


def test_graph_sees_the_package():
    g = import_graph()
    assert "avafn.inference.offline" in g
    # a module-level and a function-level import both make edges
    assert g.has_edge("avafn.inference.predictor", "avafn.inference.featurizer")
    assert g.has_edge("avafn.inference.featurizer", "avafn.extract.job")


def test_graph_finds_a_cycle(tmp_path):
    pkg = tmp_path / "avafn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from avafn.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    assert nx.find_cycle(import_graph(tmp_path))


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles in avafn: " + "; ".join(
        " -> ".join(c + [c[0]]) for c in sorted(cycles)[:10])
