"""The import direction of docs/architecture.md, enforced by walking the AST."""
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

