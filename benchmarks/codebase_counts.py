"""Size and shape of the package source: the counts a review of the code base compares.

Prints one JSON object for ``src/avafn`` (or the folder given): files, lines, functions longer
than 50 and 80 lines (a function's lines: from its ``def`` to its last statement, decorators
and nested functions included, each function counted once however deep it is nested), imports
inside functions, and the number of ``ruff --select C901,PLR0913`` findings (complexity above
ruff's default 10, more than 5 arguments) when ruff is on the PATH::

    python benchmarks/codebase_counts.py [src/avafn] [--list]

``--list`` adds the long functions (path:line name lines) and the ruff findings per rule.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _span(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
    return fn.end_lineno - start + 1


def _inner_imports(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    """Import statements in fn's own body (not in functions nested in it: those count there)."""
    found, todo = [], list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return found


def counts(root: Path) -> dict:
    files = sorted(root.rglob("*.py"))
    lines = 0
    long_fns: list[tuple[str, int, str, int]] = []
    inner = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines += len(text.splitlines())
        tree = ast.parse(text, filename=str(path))
        for fn in _functions(tree):
            n = _span(fn)
            if n > 50:
                long_fns.append((str(path.relative_to(root)), fn.lineno, fn.name, n))
            inner += len(_inner_imports(fn))
    out = {"root": str(root), "files": len(files), "lines": lines,
           "functions_over_50_lines": sum(n > 50 for *_, n in long_fns),
           "functions_over_80_lines": sum(n > 80 for *_, n in long_fns),
           "imports_inside_functions": inner,
           "long_functions": [f"{p}:{line} {name} ({n} lines)" for p, line, name, n in
                              sorted(long_fns, key=lambda r: -r[3])]}
    ruff = shutil.which("ruff")
    if ruff:
        res = subprocess.run([ruff, "check", "--select", "C901,PLR0913", "--output-format",
                              "json", "--exit-zero", str(root)], capture_output=True, text=True,
                             check=False)
        found = json.loads(res.stdout or "[]")
        out["ruff_C901_PLR0913"] = len(found)
        out["ruff_by_rule"] = dict(Counter(f["code"] for f in found))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).parent.parent / "src/avafn"))
    ap.add_argument("--list", action="store_true", help="list the long functions too")
    args = ap.parse_args(argv)
    out = counts(Path(args.root))
    if not args.list:
        out.pop("long_functions")
    json.dump(out, sys.stdout, indent=None if not args.list else 1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
