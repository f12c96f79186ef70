"""Who this process is: its type, worker id, pids, prefix, config, exiting flag.

One mutable record per process, set by `pyngx.proc` right after the fork (or
at start for single mode) and read by the public API modules. Module-level so
that reading it on a hot path costs one attribute lookup.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyngx.conf.model import Config

MASTER = "master"
WORKER = "worker"
AGENT = "privileged agent"
SINGLE = "single"
SIGNALLER = "signaller"


@dataclass(slots=True)
class ProcState:
    type: str = SIGNALLER
    worker_id: int | None = None
    worker_count: int = 1
    master_pid: int | None = None
    prefix: str = field(default_factory=os.getcwd)
    config: Config | None = None
    generation: int = 0
    exiting: bool = False
    # ``pyngx -e``: ngx.say/print/flush outside a request go to stdout (as ``resty -e``)
    exec_mode: bool = False
    # set by process.enable_privileged_agent() during init_by_python
    want_agent: bool = False
    # name -> shm shared dict object of this generation (filled by the cycle)
    shdicts: dict[str, Any] = field(default_factory=dict)
    # the per-generation namespace every Python block of the config runs in
    globals: dict[str, Any] = field(default_factory=dict)


STATE = ProcState()


def current() -> ProcState:
    return STATE
