"""ngx.worker.* (pid, id, count, exiting) and ngx.config.*."""
from __future__ import annotations

import os

from pyngx.runtime import core


__all__ = ["pid", "id", "count", "exiting", "pids", "config"]


def pid() -> int:
    """This process's pid (OpenResty's ngx.worker.pid), in every kind of process."""
    return os.getpid()


def pids() -> list[int]:
    """The pids of this generation's workers, in worker id order (this process alone in single mode)."""
    table = core.RT.tree
    if table is None:
        return [os.getpid()]
    peers = [p for p in table.peers() if p.kind in ("worker", "single")]
    return [p.pid for p in sorted(peers, key=lambda p: (p.worker_id is None, p.worker_id or 0, p.pid))]


def id() -> int | None:  # noqa: A001 - OpenResty's name
    """0..N-1 in a worker (0 in single mode), None in the master and the agent."""
    return core.RT.worker_id


def count() -> int:
    """How many workers the configuration runs (worker_processes; 1 in single mode)."""
    return core.RT.worker_count


def exiting() -> bool:
    """True from the start of this process's graceful exit (premature timers included)."""
    return core.RT.exiting


class _Config:
    """ngx.config: what OpenResty's ngx.config tells about the build and paths."""

    subsystem = "http"
    debug = False
    pyngx_version = "0.1.0"

    @staticmethod
    def prefix() -> str:
        """The prefix (-p), with a trailing slash as nginx gives it."""
        return core.RT.prefix.rstrip("/") + "/"


config = _Config()
