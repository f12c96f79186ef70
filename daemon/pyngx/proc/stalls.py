"""The master's side of ``worker_stall_timeout``: which children have stopped beating.

Each worker and the agent beat in their row of the process table
(`pyngx.runtime.watchdog`); the master looks at the rows once per ``interval``
and replaces a child whose loop has not run for longer than the timeout, as
gunicorn's arbiter does with its worker ``timeout``. The child's own watchdog
thread logs the stack first and marks its row "reported"; for a child that could
not (C code holding the GIL: a runaway regex, a C extension's long call) the master
asks faulthandler for a dump of its threads ``GRACE`` seconds later, then kills it.
Only reads the table: the master does the killing, and the reaping and the
respawn are the ones every dead child gets (zones unlocked, same worker id).
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyngx import log
from pyngx.runtime import tree

GRACE = 1.0  # seconds past the timeout to wait for the child's own report of its stack


@dataclass(frozen=True, slots=True)
class Stuck:
    pid: int
    idle: float  # seconds since the last beat
    reported: bool  # the child logged its stack


def interval(timeout: float | None) -> float:
    """How often the master looks: a quarter of the timeout, at most once a second."""
    return 1.0 if timeout is None else max(0.05, min(1.0, timeout / 4))


def overdue(table: tree.Tree, pids: Iterable[int], timeout: float | None) -> list[Stuck]:
    """The children among PIDS whose loop has not run for TIMEOUT (once they reported, or GRACE more)."""
    if timeout is None:
        return []
    rows = table.health_rows()
    now = time.monotonic_ns()
    out = []
    for pid in pids:
        row = rows.get(pid)
        if row is None or not row["beat_ns"]:
            continue  # not beating yet (still starting)
        idle = (now - row["beat_ns"]) / 1e9
        reported = bool(row["reported"])
        if idle > timeout and (reported or idle > timeout + GRACE):
            out.append(Stuck(pid, idle, reported))
    return out


def replace(table: tree.Tree, children: Mapping[int, Any], stalled: dict[int, str], timeout: float | None) -> None:
    """Kill (SIGKILL) the CHILDREN (pid -> info with ``kind``) that are overdue.

    STALLED (pid -> "dumped" or "killed") remembers what was done already. A child that
    could not log its stack first gets SIGUSR2, on which faulthandler writes every thread's
    stack to the error log from C (`pyngx.runtime.watchdog`), and is killed on the next look.
    The master reaps a killed child as any dead one and starts a fresh one with the same id.
    """
    for stuck in overdue(table, [pid for pid in children if stalled.get(pid) != "killed"], timeout):
        name = f"{children[stuck.pid].kind} process {stuck.pid}"
        what = f"has not run its event loop for {stuck.idle:.1f}s (worker_stall_timeout {timeout:g}s"
        if not stuck.reported and stuck.pid not in stalled:
            log.alert(f"{name} {what}; it could not log its stack), its threads' stacks follow")
            stalled[stuck.pid] = "dumped"
            _kill(stuck.pid, signal.SIGUSR2)
            continue
        how = "its stack is logged above" if stuck.reported else "its threads' stacks are logged above"
        log.alert(f"{name} {what}; {how}), killing it")
        stalled[stuck.pid] = "killed"
        _kill(stuck.pid, signal.SIGKILL)


def _kill(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        pass
