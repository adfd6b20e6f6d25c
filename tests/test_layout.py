"""The package's layout keeps its promises: no import cycle, small modules, and
receiving and delivering apart (the queue sits between them)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mailerq_gevent"
MAX_LINES = 500


def modules():
    """``{dotted name: path}`` of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """The package's modules that ``name`` imports, wherever in the file (late imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                candidate = base + "." + alias.name
                found.add(candidate if candidate in known else base)
    return {module for module in found if module in known and module != name}


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges):
    """Every set of modules that import each other, directly or not (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_about():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_500_lines():
    long = {name: count for name, path in modules().items()
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_receiving_and_delivering_do_not_import_each_other():
    edges = graph()
    for name, imported in edges.items():
        if name.startswith("mailerq_gevent.delivery"):
            assert not [m for m in imported if m.startswith("mailerq_gevent.smtpd")], name
        if name.startswith("mailerq_gevent.smtpd"):
            assert not [m for m in imported if m.startswith("mailerq_gevent.delivery")], name


def test_the_consoles_routes_do_not_import_the_app_that_installs_them():
    edges = graph()
    for name, imported in edges.items():
        if name.startswith("mailerq_gevent.console.") and name != "mailerq_gevent.console.app":
            assert "mailerq_gevent.console.app" not in imported, name


def test_every_module_says_what_it_owns():
    missing = [name for name, path in modules().items()
               if path.read_text().strip() and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert missing == []
