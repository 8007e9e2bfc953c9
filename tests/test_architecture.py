"""The package's shape: each module one idea, the layers apart, no import cycles.

- every module opens with a docstring saying what it is for;
- every backend package is alike: ``backend.py`` defines the :class:`Backend`,
  ``task.py`` the :class:`TaskRun`, ``rules.py`` the pure rules (no I/O library);
- backends never see a wire type, and config never imports a backend;
- pyproject declares exactly the distributions ``src/`` imports;
- no import cycle.

The import graph is built from every module under ``src/ozw`` with :mod:`ast`,
relative imports resolved against the importing module's package. For cycles,
imports made only for type checking (inside ``if TYPE_CHECKING:``) are left out:
they are never executed, so they cannot form a cycle at run time; for the layer
rules they count.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import tomllib
from pathlib import Path

from ozw.backends.base import Backend, TaskRun

SOURCE_ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE_ROOT = SOURCE_ROOT / "ozw"
BACKENDS = PACKAGE_ROOT / "backends"
BACKEND_FILES = ("backend.py", "task.py", "rules.py")
IO_LIBRARIES = frozenset(
    {"trio", "anyio", "asyncio", "subprocess", "socket", "shutil", "tempfile", "threading"}
    | {"httpx2", "lightkube", "python_on_whales"}
)
"""Libraries that do I/O: a ``rules.py`` (pure rules, tested without I/O) imports none."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def is_type_checking_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_import_nodes(
    tree: ast.AST, *, type_checking: bool = False
) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module; with ``type_checking``, those made only for
    the type checker too."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and is_type_checking_guard(node) and not type_checking:
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(
    name: str, path: Path, known: dict[str, Path], *, type_checking: bool = False
) -> set[str]:
    """The modules of the package that ``name`` imports when it runs (with
    ``type_checking``, also those it imports for the type checker)."""
    targets: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in runtime_import_nodes(tree, type_checking=type_checking):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = package_of(name, path).split(".")
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from a import b" needs a.b when b is a submodule, else a name from a.
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for candidate in candidates:
            # Importing a.b.c runs a and a.b first; the deepest known module is the edge.
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def import_graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    known = all_modules()
    return {
        name: imported_modules(name, path, known, type_checking=type_checking)
        for name, path in known.items()
    }


def external_imports(path: Path) -> set[str]:
    """The absolute names a module imports from outside ozw (``a.b`` for ``from a.b import c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in runtime_import_nodes(tree, type_checking=True):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module:
            names.add(node.module)
    return {name for name in names if name.partition(".")[0] != "ozw"}


def backend_packages() -> list[Path]:
    """``backends/<name>/`` of every backend (``execution/`` is the layer they share)."""
    return sorted(
        path
        for path in BACKENDS.iterdir()
        if (path / "__init__.py").is_file() and path.name != "execution"
    )


def classes_defined(module_name: str, base: type) -> list[type]:
    module = importlib.import_module(module_name)
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, base)
        and value.__module__ == module_name
        and not inspect.isabstract(value)
    ]


def distribution_of(module: str, owners: dict[Path, str]) -> str | None:
    """The installed distribution whose files hold ``module`` (None: standard library)."""
    if module.partition(".")[0] in sys.stdlib_module_names:
        return None
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is not installed"
    assert spec.origin is not None, f"{module} has no file"
    return owners.get(Path(spec.origin).resolve(), "?")


def declared_dependencies() -> set[str]:
    pyproject = tomllib.loads((SOURCE_ROOT.parent / "pyproject.toml").read_text())
    names = [
        re.split(r"[<>=!~\[; ]", entry, maxsplit=1)[0]
        for entry in pyproject["project"]["dependencies"]
    ]
    return {canonical(name) for name in names}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of module names (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_graph_sees_relative_and_absolute_imports() -> None:
    graph = import_graph()
    # Sanity: the graph is not empty and the CLI reaches the worker.
    assert len(graph) > 20
    assert any(targets for targets in graph.values())


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_says_its_idea() -> None:
    silent = [
        str(path.relative_to(SOURCE_ROOT))
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        if path.stat().st_size
        and ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    assert not silent, f"modules without a docstring: {silent}"


def test_every_backend_package_has_the_same_shape() -> None:
    packages = backend_packages()
    assert {p.name for p in packages} >= {"command", "direct", "docker", "kubernetes"}
    for package in packages:
        missing = [name for name in BACKEND_FILES if not (package / name).is_file()]
        assert not missing, f"backends/{package.name}/ lacks {missing}"
        prefix = f"ozw.backends.{package.name}"
        assert len(classes_defined(f"{prefix}.backend", Backend)) == 1, package.name
        assert len(classes_defined(f"{prefix}.task", TaskRun)) == 1, package.name
        assert not classes_defined(f"{prefix}.backend", TaskRun), package.name


def test_rules_modules_do_no_io() -> None:
    for package in backend_packages():
        imported = {name.partition(".")[0] for name in external_imports(package / "rules.py")}
        assert not imported & IO_LIBRARIES, (
            f"backends/{package.name}/rules.py imports {imported & IO_LIBRARIES}"
        )


def imports_across(source: str, target: str) -> dict[str, list[str]]:
    """Modules under ``source`` that import (even for the type checker) one under ``target``."""
    return {
        name: sorted(t for t in targets if t.startswith(target))
        for name, targets in import_graph(type_checking=True).items()
        if name.startswith(source) and any(t.startswith(target) for t in targets)
    }


def test_backends_see_no_wire_type() -> None:
    assert imports_across("ozw.backends", "ozw.wire") == {}


def test_config_imports_no_backend() -> None:
    assert imports_across("ozw.config", "ozw.backends") == {}


def test_pyproject_declares_what_src_imports() -> None:
    declared = declared_dependencies()
    owners: dict[Path, str] = {}
    for name in declared:
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            owners[Path(str(distribution.locate_file(file))).resolve()] = name
    imported: dict[str, set[str]] = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        for module in external_imports(path):
            if (owner := distribution_of(module, owners)) is not None:
                imported.setdefault(owner, set()).add(module)
    assert "?" not in imported, f"imported but not declared in pyproject: {imported.get('?')}"
    assert set(imported) == declared, f"declared but not imported: {declared - set(imported)}"


PUBLIC_UNDERSCORED = frozenset({"_replace", "_asdict", "_fields", "_make", "_exit"})
"""Underscored names that are public API (namedtuple's methods, ``os._exit``)."""


def test_no_reaching_into_private_attributes() -> None:
    """Only an object's own methods touch its private attributes (``self._x``); a
    library's privates (lightkube's ``client._client``) and private modules stay out."""
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SOURCE_ROOT)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in PUBLIC_UNDERSCORED
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{where}:{node.lineno} .{node.attr}")
        for name in external_imports(path):
            if any(part.startswith("_") and not part.startswith("__") for part in name.split(".")):
                found.append(f"{where}: imports {name}")
    assert not found, found
