"""The status page's numbers in Prometheus's text format (``?format=prometheus``).

Owns the names: one row per family (what it counts, counter or gauge, its unit,
which part of a path becomes a label), following Prometheus's naming rules:
``# HELP`` and ``# TYPE`` for every family, counters end in ``_total``, units in
the name (``_bytes``, ``_seconds``), dimensions as labels. The answering process's
own series carry ``type`` and ``worker_id``, identities that a reload keeps (a pid
would start new series at every reload); tree-wide figures (shared dicts, the
server's totals) carry none. A number the table does not know yet (a field added
to the status page) still appears, as a gauge named after its path with the same
process labels. Knows nothing of where the numbers come from: it reads the plain
data ``status.collect()`` returns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["FAMILIES", "Family", "render"]

PREFIX = "pyngx_"
PROCESS, TREE = "process", "tree"  # labelled with this process's type/worker_id, or not
# identities of the answering process: its labels, not series
_IDENTITY = frozenset({"pid", "type", "worker_id", "master_pid", "processes"})


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: where its numbers are in the status data, and how it is shown.

    PATH is a tuple of keys into the data; a key may be a glob (``?xx``, ``*``), and
    the key it matched becomes the value of LABEL. A counter's name gets ``_total``.
    KIND "skip" hides a number (a sum of others, say).
    """

    path: tuple[str, ...]
    name: str
    kind: str
    help: str
    label: str = ""
    scope: str = PROCESS

    @property
    def metric(self) -> str:
        return PREFIX + self.name + ("_total" if self.kind == "counter" else "")


def _row(path: str, name: str, kind: str, help: str, label: str = "", scope: str = PROCESS) -> Family:
    return Family(tuple(path.split("/")), name, kind, help, label, scope)


FAMILIES: tuple[Family, ...] = (
    _row("generation", "generation", "gauge", "Configuration generation this process serves (1, then one more per reload)."),
    _row("uptime", "uptime_seconds", "gauge", "Seconds since this process began serving."),
    _row("worker_count", "worker_processes", "gauge", "Workers the configuration asks for.", scope=TREE),
    _row("http/connections/accepted", "http_connections_accepted", "counter", "HTTP connections accepted."),
    _row("http/connections/active", "http_connections_active", "gauge", "HTTP connections open now."),
    _row("http/connections/idle", "http_connections_idle", "gauge", "Open HTTP connections waiting for a request."),
    _row("http/requests/total", "http_requests", "counter", "HTTP requests read."),
    _row("http/requests/refused", "http_requests_refused", "counter", "HTTP requests refused before a handler ran."),
    _row("http/requests/?xx", "http_responses", "counter", "HTTP responses by status class.", "class"),
    _row("http/draining", "http_draining", "gauge", "1 while this process drains its connections before exiting."),
    _row("http_all/accepted", "server_connections_accepted", "counter",
         "HTTP connections accepted by every process of the server, exited ones included.", scope=TREE),
    _row("http_all/active", "server_connections_active", "gauge",
         "HTTP connections open in every process of the server.", scope=TREE),
    _row("http_all/requests", "server_requests", "counter",
         "HTTP requests read by every process of the server, exited ones included.", scope=TREE),
    _row("http_all/refused", "server_requests_refused", "counter",
         "HTTP requests refused by every process of the server, exited ones included.", scope=TREE),
    _row("http_all/?xx", "server_responses", "counter",
         "HTTP responses by status class, from every process of the server, exited ones included.", "class",
         scope=TREE),
    _row("timers/pending", "timers_pending", "gauge", "Timers waiting to fire."),
    _row("timers/running", "timers_running", "gauge", "Timer callbacks started and not finished."),
    _row("timers/waiting_for_slot", "timers_waiting_for_slot", "gauge",
         "Expired timers waiting for a free running slot."),
    _row("timers/max_pending", "timers_pending_limit", "gauge", "python_max_pending_timers."),
    _row("timers/max_running", "timers_running_limit", "gauge", "python_max_running_timers."),
    _row("timers/fired", "timers_fired", "counter", "Timer callbacks run."),
    _row("timers/failed", "timers_failed", "counter", "Timer callbacks that raised."),
    _row("timers/waited_for_slot", "timers_waited_for_slot", "counter",
         "Expired timers that had to wait for a running slot."),
    _row("timers/skipped_overlap", "timers_skipped_overlap", "counter",
         "Runs of an every() timer skipped because the previous run was still going."),
    _row("timers/premature", "timers_premature", "counter", "Timer callbacks run with premature=True at exit."),
    _row("timers/cancelled_at_exit", "timers_cancelled_at_exit", "counter",
         "Timers cancelled because the process exited first."),
    _row("ipc/sent", "ipc_messages_sent", "counter", "IPC messages sent."),
    _row("ipc/received", "ipc_messages_received", "counter", "IPC messages received."),
    _row("ipc/dropped", "ipc_messages_dropped", "counter", "IPC messages dropped (peer gone or queue full)."),
    _row("ipc/refused", "ipc_connections_refused", "counter", "IPC connections refused (not from this tree)."),
    _row("ipc/bytes_out", "ipc_sent_bytes", "counter", "IPC bytes sent."),
    _row("ipc/bytes_in", "ipc_received_bytes", "counter", "IPC bytes received."),
    _row("ipc/bytes", "ipc_bytes", "skip", "the sum of the two above"),
    _row("ipc/peers", "ipc_peers", "gauge", "IPC connections open to other processes."),
    _row("ipc/queued", "ipc_queued_messages", "gauge", "IPC messages waiting to be written."),
    _row("events/configured", "events_configured", "gauge", "1 once events.configure() has run in this process."),
    _row("events/posted", "events_posted", "counter", "Events posted by this process."),
    _row("events/handled", "events_handled", "counter", "Events this process ran handlers for."),
    _row("events/lost", "events_lost", "counter", "Events overwritten before this process read them."),
    _row("events/handlers", "events_handlers", "gauge", "Event handlers registered."),
    _row("shared_dicts/*/capacity", "shared_dict_capacity_bytes", "gauge",
         "Declared size of the shared dict.", "dict", TREE),
    _row("shared_dicts/*/free", "shared_dict_free_bytes", "gauge", "Free space in the shared dict.", "dict", TREE),
    _row("shared_dicts/*/items", "shared_dict_items", "gauge", "Items stored in the shared dict.", "dict", TREE),
    _row("shared_dicts/*/evictions", "shared_dict_evictions", "counter",
         "Valid items evicted (LRU) to make room.", "dict", TREE),
    _row("shared_dicts/*/chunks", "shared_dict_chunks", "gauge", "Allocation chunks in the shared dict.", "dict", TREE),
    _row("shared_dicts/*/chunk_size", "shared_dict_chunk_size_bytes", "gauge",
         "Size of one allocation chunk.", "dict", TREE),
)
_PROCESSES = Family(("processes",), "processes", "gauge", "Live processes of the tree by type, every generation.",
                    "type", TREE)
_READY = Family(("processes", "ready"), "process_ready", "gauge",
                "1 once the process (of the newest generation with this type and worker id) serves.")
# the numbers of each process's row, by their key (or key/subkey) in the row
_PROCESS_FAMILIES: dict[str, Family] = {
    "ready": _READY,
    "rss": Family(("processes", "rss"), "process_resident_memory_bytes", "gauge", "Resident memory of the process."),
    "stall/stalls": Family(("processes", "stall", "stalls"), "process_stalls", "counter",
                           "Times the process's event loop did not run for longer than worker_stall_warn."),
    "stall/longest": Family(("processes", "stall", "longest"), "process_stall_longest_seconds", "gauge",
                            "The longest time the process's event loop did not run."),
    "stall/current": Family(("processes", "stall", "current"), "process_stall_current_seconds", "gauge",
                            "How long the process's event loop has not run now (0 when it runs)."),
}


class _Out:
    """Families in first-seen order, each with its samples."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[Family, list[str]]] = {}

    def add(self, family: Family, labels: dict[str, str], value: Any) -> None:
        if family.kind == "skip":
            return
        entry = self.families.setdefault(family.metric, (family, []))
        entry[1].append(f"{family.metric}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        lines = []
        for metric, (family, samples) in self.families.items():
            lines.append(f"# HELP {metric} {_escape_help(family.help)}")
            lines.append(f"# TYPE {metric} {family.kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def render(data: dict[str, Any]) -> str:
    """The Prometheus text (format 0.0.4) of DATA, the status page's plain data."""
    out = _Out()
    own = {"type": str(data.get("type", ""))}
    if data.get("worker_id") is not None:
        own["worker_id"] = str(data["worker_id"])
    _processes(data.get("processes", []), out)
    for path, value in _leaves(data):
        if path[0] in _IDENTITY:
            continue
        family, key = _lookup(path)
        labels = dict(own) if family.scope == PROCESS else {}
        if family.label:
            labels[family.label] = key
        out.add(family, labels, value)
    return out.text()


def _processes(rows: list[dict[str, Any]], out: _Out) -> None:
    """How many processes of each type; per (type, worker id), the newest generation's numbers."""
    counts: dict[str, int] = {}
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        kind = str(row.get("type", ""))
        counts[kind] = counts.get(kind, 0) + 1
        ident = (kind, "" if row.get("worker_id") is None else str(row["worker_id"]))
        if ident not in newest or row.get("generation", 0) >= newest[ident].get("generation", 0):
            newest[ident] = row
    for kind, n in sorted(counts.items()):
        out.add(_PROCESSES, {"type": kind}, n)
    for (kind, wid), row in sorted(newest.items()):
        labels = {"type": kind, **({"worker_id": wid} if wid else {})}
        for path, value in _leaves(row):
            if path[0] in ("pid", "type", "worker_id", "generation", "http"):
                continue  # identities; "http" rows are in the server_* totals
            family = _PROCESS_FAMILIES.get("/".join(path)) or _fallback(("process", *path))
            out.add(family, labels, value)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every number in VALUE with its path of keys (lists and strings are not numbers)."""
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            out.extend(_leaves(item, (*path, str(key))))
        return out
    return [(path, value)] if _is_number(value) and path else []


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float))


def _lookup(path: tuple[str, ...]) -> tuple[Family, str]:
    """The family a path belongs to, and the key its glob matched ("" for none)."""
    for family in FAMILIES:
        if len(family.path) == len(path) and all(map(fnmatchcase, path, family.path)):
            glob = next((i for i, part in enumerate(family.path) if any(c in part for c in "*?[")), None)
            return family, "" if glob is None else path[glob]
    return _fallback(path), ""


def _fallback(path: tuple[str, ...]) -> Family:
    """A gauge for a number the table does not name yet."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", "_".join(path))
    return Family(path, name, "gauge", f"The status page's {'.'.join(path)}.")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)
