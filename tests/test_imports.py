"""The layers' imports, drawn from the source (every import statement, at module level or inside a function):
no module reaches itself again through others, `defenses` is a plain library, and `webapp` never imports
`workers` (workers -> webapp -> defenses)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("defenses", "webapp", "workers", "stack", "bench")


def module_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # frozen history: a migration names what the models were then
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a name inside a module counts as that module)."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, one path each (depth-first search; a back edge closes a circle)."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    assert circles(import_graph()) == []


def test_the_search_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c", "a"]]


def test_layers_import_one_way():
    files = module_files()
    reached = {}
    for module, targets in import_graph().items():
        reached.setdefault(module.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    assert reached["defenses"] <= {"defenses"}
    assert "workers" not in reached["webapp"]
    for module, path in files.items():
        if module.startswith("defenses"):
            outside = {name.split(".")[0] for name in imported_names(module, path)} & {"django", "celery", "redis"}
            assert not outside, f"{module} imports {outside}: defenses/ is a plain library"
