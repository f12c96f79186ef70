"""The ``pyngx_status;`` page: the process tree and every part's counters.

Owns collecting ``statistics()`` from the parts that offer it (HTTP here,
timers, shared dicts, IPC, events: looked up by name, so a part that is not
there is left out) and rendering JSON or, with ``?format=prometheus``, the
Prometheus text format. The counters are this worker's; the tree is all, and
``http_all`` adds up the HTTP counters of every process of the server (those
that exited included), from the rows the workers publish in the process table
once per tick.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from pyngx.http import metrics
from pyngx.runtime import core, state, timers, tree

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange
    from pyngx.http.server import HttpServer

_PARTS = (("ipc", "pyngx.runtime.channel"), ("events", "pyngx.runtime.eventbus"),
          ("thread_pools", "pyngx.runtime.threads"))


def collect(server: HttpServer) -> dict[str, Any]:
    """Everything the status page shows, as plain data."""
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "type": core.RT.kind,
        "worker_id": core.RT.worker_id,
        "worker_count": core.RT.worker_count,
        "generation": core.RT.generation,
        "master_pid": core.RT.master_pid,
        "uptime": round(time.time() - server.started, 3),
        "processes": _processes(),
        "rss": rss(os.getpid()),  # bytes; each child's is in its "processes" entry
        "master_rss": rss(core.RT.master_pid) if core.RT.master_pid else None,
        "http": server.statistics(),
    }
    if core.RT.tree is not None:
        out["http_all"] = core.RT.tree.http_totals(own=server.counter_row())
    out["timers"] = _plain(timers.statistics(core.RT.timers))
    for name, module in _PARTS:
        stats = _module_stats(module)
        if stats is not None:
            out[name] = stats
    out["shared_dicts"] = _shdicts()
    if core.RT.config is not None and core.RT.config.http is not None and core.RT.config.http.cluster is not None:
        out["cluster"] = _module_stats("pyngx.runtime.cluster")  # python_cluster: the link and the nodes
    return out


def _processes() -> list[dict[str, Any]]:
    """Every listed process; a worker's entry has its HTTP counters as last published."""
    table = core.RT.tree
    if table is None:
        return []
    rows = table.http_rows()
    health = table.health_rows()
    out = []
    for p in table.peers(current=False):
        entry = {"pid": p.pid, "type": p.kind, "worker_id": p.worker_id, "generation": p.generation, "ready": p.ready}
        entry["rss"] = rss(p.pid)
        if p.kind in (state.WORKER, state.SINGLE) and p.pid in rows:
            entry["http"] = dict(zip(tree.HTTP_FIELDS, rows[p.pid]))
        if p.pid in health:
            entry["stall"] = _stall(health[p.pid])
        out.append(entry)
    return out


def _stall(row: dict[str, int]) -> dict[str, float | int]:
    """The event loop watchdog's counters of one process (seconds)."""
    since = row["stalled_since_ns"]
    current = (time.monotonic_ns() - since) / 1e9 if since else 0.0
    return {"stalls": row["stalls"], "longest": row["longest_us"] / 1e6, "current": round(current, 3)}


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int | None:
    """The resident set size of PID in bytes (/proc/PID/statm), None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _module_stats(name: str) -> Any:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    fn = getattr(module, "statistics", None)
    if fn is None:
        return None
    try:
        return _plain(fn())
    except Exception as exc:  # noqa: BLE001 - a broken counter must not break the page
        return {"error": str(exc)}


def _shdicts() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, zone in core.RT.shdicts.items():
        stats = getattr(zone, "statistics", None)
        try:
            if stats is not None:
                out[name] = _plain(stats())
            else:
                out[name] = {k: getattr(zone, k)() for k in ("capacity", "free_space") if hasattr(zone, k)}
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": str(exc)}
    return out


def _plain(value: Any) -> Any:
    """Dataclasses, namedtuples and objects with __slots__ become dicts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_asdict"):
        return [_plain(v) for v in value]
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None:
        return {k: _plain(getattr(value, k)) for k in fields}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def render(server: HttpServer, ex: Exchange) -> tuple[bytes, str]:
    """(body, content type) for the status location."""
    data = collect(server)
    if "format=prometheus" in ex.args:
        return prometheus(data).encode(), "text/plain; version=0.0.4; charset=utf-8"
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), "application/json"


def prometheus(data: dict[str, Any]) -> str:
    """DATA in Prometheus's text format (the names and labels are metrics.py's)."""
    return metrics.render(data)
