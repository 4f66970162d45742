"""The house shows the design (issue 15, defect 5): a core that decides and does no I/O, drivers
that only perform, no module cycles, no data riding through ``transitions`` callbacks, and the
whole state in the one snapshot."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from session_fsm import KSSession, Snapshot, State, table
from session_fsm.core.machine import shared_machine
from tests.conftest import make_credentials

PACKAGE = Path(__file__).resolve().parent.parent / "session_fsm"
#: What the core may not import: the I/O and concurrency libraries, and the drivers.
FORBIDDEN_IN_CORE = ("requests", "urllib3", "threading", "asyncio", "socket", "httpx", "aiohttp")
DRIVER_MODULES = (
    "session_fsm.sync",
    "session_fsm.aio",
    "session_fsm.wire",
    "session_fsm.transport",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports at module level or in functions (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_the_core_imports_no_io_library_and_no_driver() -> None:
    core = {n: p for n, p in _modules().items() if n.startswith("session_fsm.core")}
    assert len(core) >= 8, "the core package exists"
    bad = sorted(
        (name, imp)
        for name, path in core.items()
        for imp in _imports(path)
        if imp.split(".")[0] in FORBIDDEN_IN_CORE or imp.startswith(DRIVER_MODULES)
    )
    assert bad == []


def _module_level_imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, node.module] if node.module else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def test_no_import_cycles_between_the_library_modules() -> None:
    """Module-level imports between session_fsm's modules form no cycle (the package's own
    ``__init__`` files, which only re-export, are left out)."""
    modules = _modules()
    inits = {n for n, p in modules.items() if p.name == "__init__.py"}
    graph = {
        name: {i for i in _module_level_imports(path) if i in modules and i not in inits}
        for name, path in modules.items()
        if name not in inits
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_machine_has_no_callbacks_only_guards_from_the_table() -> None:
    machine = shared_machine()
    for e in table.TRANSITIONS:
        (transition,) = machine.events[e.trigger].transitions[e.source.name]
        assert transition.dest == e.dest.name
        assert [c.func.__name__ for c in transition.conditions] == list(e.guards)
        assert all(callable(c.func) for c in transition.conditions)  # no strings to resolve
        assert transition.before == transition.after == transition.prepare == []


def test_the_snapshot_is_the_whole_state() -> None:
    fields = {f.name for f in dataclasses.fields(Snapshot)}
    needed = {"state", "host", "session_token", "generation", "login_time", "who",
              "bearer_generation", "cooldown", "refreshing"}  # fmt: skip
    assert needed <= fields
    s = KSSession(make_credentials(), host="https://tradeapi.kotaksecurities.com/apim")
    # The session object holds its parts (core, driver, wire, store) and, until its core is
    # made at first use, what that core is made of (its settings): no state of its own.
    made_of = {"_credentials", "_origin", "_config", "_allowed", "_clock", "_logger",
               "_callbacks", "_session_id"}  # fmt: skip
    assert set(vars(s)) <= {"_wire", "_store", "_core", "_driver"} | made_of
    assert not {name.lstrip("_") for name in vars(s)} & fields
    assert s.snapshot().state is State.UNINITIALISED and s.snapshot().who is not None
    assert set(vars(s)) <= {"_wire", "_store", "_core", "_driver"} | made_of


def test_every_package_is_installed() -> None:
    """A wheel holds every package of the source tree (pyproject lists them by hand)."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]
                 ["setuptools"]["packages"])  # fmt: skip
    found = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert found == listed
