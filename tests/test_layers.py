"""The packages' layers point one way: schemas <- registry <- builders, generators <- cli, and no module imports
itself back through others. Read from the source with `ast`, so a new import that breaks it fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "registry", "builders", "generators", "cli")
# what each package may import from the others
ALLOWED = {"schemas": set(), "registry": {"schemas"}, "builders": {"schemas", "registry"},
           "generators": {"schemas", "registry"}, "cli": {"schemas", "registry", "builders", "generators"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of the file, type-checking imports included)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for target in targets:
                # the longest project module the target names ("registry.db.stores.among" -> registry.db.stores)
                parts = target.split(".")
                hit = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules),
                           None)
                if hit and hit != name:
                    found.add(hit)
        graph[name] = found
    return graph


def test_no_package_imports_against_the_layers():
    wrong = sorted(f"{m} imports {t}" for m, ts in imports().items() for t in ts
                   if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert wrong == []


def test_no_import_cycles():
    graph = imports()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, set())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []
