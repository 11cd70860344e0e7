"""The package's shape: kerasopt's modules import each other without a cycle, counting the
imports under ``if TYPE_CHECKING:`` too (a reader and mypy follow those), so the package reads
bottom-up (docs/architecture.md)."""

from __future__ import annotations

import ast
import pathlib

import kerasopt

ROOT = pathlib.Path(kerasopt.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """module -> the kerasopt modules it imports (``from . import x`` counts as ``x``)."""
    modules: dict[str, pathlib.Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                for name in subs or [target]:
                    if name in modules and name != module:
                        graph[module].add(name)
            elif isinstance(node, ast.Import):
                graph[module].update(
                    a.name for a in node.names if a.name in modules and a.name != module
                )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_module_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert cycles(graph) == []


def test_the_shared_types_are_a_leaf() -> None:
    graph = import_graph()
    assert graph["kerasopt._types"] <= {"kerasopt.sparse"}
    assert graph["kerasopt._sync"] == set()


def test_a_cycle_is_found() -> None:  # the check can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# the modules that drive optimizers from outside: they use kerasopt.step, never an optimizer's
# private members (a user's own wrapper can do what they do)
DRIVERS = [
    "wrappers/_base.py",
    "wrappers/loss_scale.py",
    "wrappers/multi.py",
    "wrappers/_optimizer_map.py",
    "optim/_adapter.py",
    "optim/_groups.py",
    "optim/_torch_state.py",
    "keras3/loss_scale.py",
    "keras3/multi.py",
    "keras3/optim.py",
    "checkpoint.py",
]


def private_uses(path: pathlib.Path, private: set[str]) -> list[str]:
    """``x._name`` accesses in ``path`` where ``_name`` is a private member of Optimizer and ``x``
    is not the module's own object (``self`` / ``cls``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in private
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            out.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return out


def test_wrappers_use_no_private_member_of_optimizer() -> None:
    opt = kerasopt.optimizers.Adam()
    private = {
        n
        for n in {*dir(kerasopt.Optimizer), *vars(opt)}
        if n.startswith("_") and not n.startswith("__")
    }
    found = [u for name in DRIVERS for u in private_uses(ROOT / name, private)]
    assert found == []


def test_the_private_use_check_can_fail(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "driver.py"
    source.write_text("def f(inner):\n    return inner._plan, self._store\n")
    assert private_uses(source, {"_plan", "_store"}) == ["driver.py:2: ._plan"]


def test_no_source_file_is_over_600_lines_and_the_optimizer_class_is_small() -> None:
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 600} == {}
    source = (ROOT / "optimizer.py").read_text()
    tree = ast.parse(source)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Optimizer"]
    assert cls.end_lineno is not None and cls.end_lineno - cls.lineno + 1 <= 600
