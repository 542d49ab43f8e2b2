"""The package plan, checked on the source (docs/architecture.md): no import cycle, no forbidden
edge, no module over 400 lines, no runtime function over 60 lines, bench code imports no tests.

Imports are read with `ast` from every file, module-level and inside functions alike. Imports
under `if TYPE_CHECKING:` are annotations only (never executed) and are not edges: an observer
may name the `Pipeline` type it is handed without the observer module depending on the pipeline.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "sync", "models")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Build-time converters (models/) run once on a build machine, not in the daemon or the hub.
RUNTIME = ("edge", "sync")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return found


def _imported(tree: ast.AST) -> Iterator[str]:
    skip = _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@cache
def imports_of(name: str) -> frozenset[str]:
    """Every name `name` imports: our modules resolved to the module, third-party ones as written."""
    out = set()
    for target in _imported(ast.parse(modules()[name].read_text(encoding="utf-8"))):
        resolved = target
        while resolved and resolved not in modules():
            resolved = resolved.rpartition(".")[0]
        out.add(resolved if resolved else target)
    out.discard(name)
    return frozenset(out)


def ours(name: str) -> list[str]:
    return sorted(t for t in imports_of(name) if t in modules())


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in ours(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in modules():
        if name not in index:
            visit(name)
    return found


def test_there_is_no_import_cycle() -> None:
    assert _cycles() == []


def _closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for target in ours(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _starts(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _in(package: str) -> list[str]:
    return [m for m in modules() if _starts(m, (package,))]


# (who, what they must not import directly, why)
NEVER = [
    (("edge.perception", "edge.video"), ("paho", "zmq", "sqlite3", "sync", "edge.outputs", "edge.service", "edge.audit",
     "edge.daemon", "edge.cli", "edge.gallery.store", "edge.gallery.db", "edge.gallery.keys", "edge.gallery.sync_apply"),
     "stages know no MQTT, sockets or storage"),
    (("edge.gallery",), ("paho", "zmq", "http", "socket", "sync", "edge.outputs", "edge.video", "edge.service", "edge.daemon", "edge.cli"),
     "the store knows no network"),
    (("edge.outputs",), ("numpy", "edge.gallery.store", "edge.gallery.search", "edge.gallery.records", "edge.gallery.index",
     "edge.video.decide", "edge.perception", "sync"),
     "outputs act on decision events; templates never reach them"),
    (("edge.access",), ("edge.gallery.store", "edge.video", "edge.outputs", "sync", "zmq", "paho"), "rules are pure"),
    (("edge.config", "edge.errors", "edge.events", "edge.names"), ("edge.access.rules", "edge.video", "edge.gallery", "edge.outputs", "sync", "numpy"),
     "the shared vocabulary depends on nothing above it"),
    (("sync",), ("edge.video", "edge.outputs", "edge.daemon", "edge.cli", "edge.service"), "sync is a layer below the daemon"),
]


@pytest.mark.parametrize(("owners", "forbidden", "why"), NEVER, ids=[n[2] for n in NEVER])
def test_forbidden_imports(owners: tuple[str, ...], forbidden: tuple[str, ...], why: str) -> None:
    bad = [f"{m} imports {t}" for owner in owners for m in _in(owner) for t in imports_of(m) if _starts(t, forbidden)]
    assert bad == [], why


# What the hub may use of the device side, directly or through anything it imports: formats and
# primitives, never the device's stores, runtime or outputs. Package __init__ files hold docstrings.
HUB_MAY_USE = (
    "edge.errors", "edge.atomic_file", "edge.names", "edge.config", "edge.access.schedule", "edge.identity", "edge.gallery.crypto", "edge.gallery.records", "edge.gallery.changes",
    "edge.gallery.retention_policy",
    "edge.audit.records", "edge.perception", "sync.protocol", "sync.bundle", "sync.sealing", "sync.ratchet", "sync.keyfiles", "sync.broker", "sync.rejects", "sync.signing", "sync.hubkeys", "sync.hub",
)
PACKAGE_INITS = ("edge", "sync", "edge.gallery", "edge.audit")


def test_the_hub_imports_no_device_internals() -> None:
    bad = {m: sorted(t for t in _closure(m) if not _starts(t, HUB_MAY_USE) and t not in PACKAGE_INITS) for m in _in("sync.hub")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_only_the_command_line_reaches_into_the_hub() -> None:
    reaching = sorted(m for m in _in("edge") for t in imports_of(m) if _starts(t, ("sync.hub",)))
    assert reaching == ["edge.cli.main"]


def test_bench_code_imports_no_tests() -> None:
    bad = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad += [f"{path.name}: {t}" for t in _imported(tree) if _starts(t, ("tests", "conftest"))]
        bad += [f"{path.name}: sys.path to tests/" for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value == "tests"]
    assert bad == []


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := path.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES}
    assert long == {}


def test_no_runtime_function_is_over_60_lines() -> None:
    long = {}
    for name, path in modules().items():
        if not _starts(name, RUNTIME):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_package_init_files_import_nothing_heavy() -> None:
    """`import edge.config` must not pull in the inference runtime: package __init__ files only
    re-export from their own modules (edge.config) or hold a docstring."""
    heavy = {name: ours(name) for name, path in modules().items() if path.name == "__init__.py" and not _starts(name, ("edge.config",)) and ours(name)}
    assert heavy == {}
