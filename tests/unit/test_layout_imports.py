"""The import direction and the process-state rules of docs/architecture.md, enforced by walking the AST."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "daemon" / "pyngx"
CHAIN = ["errors", "log", "conf", "shm", "runtime", "http", "proc", "cli"]
PUBLIC = {"base", "request", "req", "flow", "timer", "shared", "worker", "process", "ipc", "events", "pipe", "shell"}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pyngx":
                out += [(f"pyngx.{alias.name}", node.lineno) for alias in node.names]
            elif node.module.startswith("pyngx."):
                out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("pyngx.")]
    return out


def test_internals_never_import_the_public_api_and_follow_the_chain() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        room = rel.parts[0].removesuffix(".py")
        if room in ("__init__", "__main__") or room in PUBLIC:
            continue
        for module, line in _imports(path):
            target = _room(module)
            if target in PUBLIC:
                bad.append(f"{rel}:{line} imports public module {module}")
            elif target in CHAIN and room in CHAIN and CHAIN.index(target) > CHAIN.index(room):
                bad.append(f"{rel}:{line} imports {module}, which is above it")
    assert not bad, "\n".join(bad)



# -- the process's state: one record (runtime/core.py's RT), read through one accessor --

# What is still module-level and mutable besides core.RT, each with its reason. A new entry
# needs one: the parts of a process belong to its core.Runtime.
MODULE_STATE = {
    ("runtime/core.py", "RT"): "the accessor itself",
    ("runtime/channel.py", "_internal"): "which module handles which internal alert: filled at import",
    ("runtime/channel.py", "_on_lost"): "the same, for lost peers",
    ("runtime/children.py", "_reg"): "the OS process's children (pipes run outside a daemon too); reset at fork",
    ("runtime/repeats.py", "_seen"): "repeated log lines of the OS process",
    ("runtime/repeats.py", "_hooked_pid"): "the same",
    ("log.py", "_reopen_hooks"): "the error log is the OS process's; USR1 reopens what registered",
    ("ipc.py", "_NAMES"): "a cache of checked names",
    ("runtime/usercode.py", "_real"): "a cache of resolved paths",
    ("http/sendfile.py", "_dates"): "a cache of formatted dates",
    ("http/exchange.py", "_LOWER"): "a bounded cache of lower-cased request header names",
    ("http/exchange.py", "_NAMES"): "a bounded cache of cleaned response header names",
    ("http/exchange.py", "_LINES"): "a bounded cache of rendered response header lines",
    ("http/variables.py", "_ARGS"): "a bounded cache of parsed query strings",
    ("shared.py", "_WRAPPED"): "the wrappers of zones, each checked against core.RT.shdicts when read",
    ("conf/lalr.py", "_parser"): "the parser's reusable state",
    ("http/phases.py", "ARG"): "a constant table",
}
# who may make the record current (the process's start, a generation's init, the master's adopt)
INSTALLERS = {"proc/boot.py", "proc/cycle.py", "proc/master.py", "proc/child.py", "proc/single.py"}


def _mutable(value: ast.expr | None) -> bool:
    if isinstance(value, (ast.List, ast.Set)):
        return not value.elts
    if isinstance(value, ast.Dict):
        return not value.keys
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
        value.func.id in ("dict", "list", "set", "deque", "bytearray")


def _module_state(path: Path) -> list[tuple[str, int]]:
    """Names the module rebinds with ``global`` or binds at its top level to an empty container."""
    tree = ast.parse(path.read_text(), str(path))
    out = [(name, node.lineno) for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names]
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _mutable(node.value):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                out.append((target.id, node.lineno))
    return out


def test_no_module_level_state_but_the_listed() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        for name, line in _module_state(path):
            if (rel, name) not in MODULE_STATE:
                bad.append(f"{rel}:{line} {name}: module-level mutable state (a Runtime's part belongs on it)")
    assert not bad, "\n".join(bad)


def test_the_record_is_read_through_core_and_made_current_by_the_process_start_only() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "pyngx.runtime.core":
                bad.append(f"{rel}:{node.lineno} imports names of core (RT would be a stale copy): "
                           "import the module and read core.RT")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "install" and ast.unparse(node.func.value) in ("core", "_core") and \
                    rel not in INSTALLERS:
                bad.append(f"{rel}:{node.lineno} makes a record current: only the process start does")
    assert not bad, "\n".join(bad)


def test_core_imports_only_what_its_records_are_made_of() -> None:
    """runtime/core.py: nothing of http or proc; the parts it starts are imported where they start."""
    path = PKG / "runtime" / "core.py"
    tree = ast.parse(path.read_text(), str(path))
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
             for node in top for alias in node.names}
    ours = {name for name in names if name.startswith("pyngx")}
    assert ours == {"pyngx.runtime.lifecycle", "pyngx.runtime.state"}, ours
    every = [module for module, _ in _imports(path)]
    assert not [m for m in every if _room(m) in ("http", "proc", "cli")], every


def test_public_modules_reach_the_process_through_core_only() -> None:
    """The public API never imports the process machinery (proc) nor the process table."""
    bad = []
    for path in PKG.glob("*.py"):
        room = path.stem
        if room not in PUBLIC:
            continue
        for module, line in _imports(path):
            if _room(module) == "proc" or module in ("pyngx.runtime.tree", "pyngx.runtime.lifecycle"):
                bad.append(f"{room}.py:{line} imports {module}")
    assert not bad, "\n".join(bad)
