"""Who this process is and what it owns, behind one accessor (``core.RT``).

Every process has exactly one current record, ``RT``:

- `Process`: who the process is (its kind, worker id and count, the
  master's pid, the prefix, the exiting and ``-e`` flags) and the generation
  whose code it runs (config, number, shared dict zones, init namespace,
  whether init_by_python asked for the agent). The master and the signaller
  hold one of these and nothing more: the master installs a fresh one while
  init_by_python of a new generation runs (`pyngx.proc.cycle.build`) and one
  for the generation it adopts (`pyngx.proc.master.Master.adopt`).
- `Runtime(cycle, kind, loop)`: a `Process` that serves (a worker, the
  privileged agent, the single process, ``pyngx -e``). It also owns the
  parts of the process: the process table (``tree``), its timers engine and
  its IPC channel, made by `Runtime.start` in the order of ``STEPS``; its
  HTTP servers (``servers``, `pyngx.http.server.start`), its cluster member
  (``cluster``); the events bus (``bus``) when ``events.configure`` runs,
  the thread pools (``pools``) at the first ``ngx.run_worker_thread``. They
  stop through the exit hooks every record owns (``exits``,
  `lifecycle.Exits`), in the orders `pyngx.runtime.lifecycle` declares.

The public modules read ``core.RT`` (one module attribute, then one slot)
and nothing else of the process; the process main (`pyngx.proc.child`)
installs the Runtime once, right after the fork. Imports nothing of
``pyngx.http`` or ``pyngx.proc``.
"""
from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from pyngx.runtime import lifecycle, state

if TYPE_CHECKING:
    from pyngx.conf.model import Config
    from pyngx.runtime.channel import Channel
    from pyngx.runtime.eventbus import Bus
    from pyngx.runtime.threads import Pools
    from pyngx.runtime.timers import Engine
    from pyngx.runtime.tree import Tree


class Process:
    """Who this process is and the generation whose code it runs."""

    # what only a serving process has (`Runtime` makes them slots): None here, so
    # ``core.RT.timers`` is one lookup in every kind of process
    cycle: Any = None
    loop: asyncio.AbstractEventLoop | None = None
    timers: Engine | None = None
    channel: Channel | None = None
    bus: Bus | None = None
    tree: Tree | None = None
    servers: tuple[Any, ...] | list[Any] = ()  # `pyngx.http.server.HttpServer`s
    pools: Pools | None = None
    cluster: Any = None  # `pyngx.runtime.cluster.Member` (python_cluster)

    __slots__ = ("kind", "worker_id", "worker_count", "master_pid", "prefix", "config", "generation",
                 "shdicts", "globals", "events", "want_agent", "exiting", "exec_mode", "exits")

    def __init__(self, kind: str = state.SIGNALLER, *, worker_id: int | None = None, worker_count: int = 1,
                 master_pid: int | None = None, prefix: str | None = None, config: Config | None = None,
                 generation: int = 0, shdicts: dict[str, Any] | None = None,
                 globals: dict[str, Any] | None = None, exec_mode: bool = False) -> None:
        self.kind = kind
        self.worker_id = worker_id
        self.worker_count = worker_count
        self.master_pid = master_pid
        self.prefix = prefix if prefix is not None else os.getcwd()
        self.config = config
        self.generation = generation
        self.shdicts: dict[str, Any] = shdicts if shdicts is not None else {}
        self.globals: dict[str, Any] = globals if globals is not None else {}
        # the generation's event handlers (`eventbus.Registry`), made by the first events.register
        self.events: Any = None
        self.want_agent = False  # set by process.enable_privileged_agent() during init_by_python
        self.exiting = False
        # ``pyngx -e``: ngx.say/print/flush outside a request go to stdout (as ``resty -e``)
        self.exec_mode = exec_mode
        self.exits = lifecycle.Exits(self)  # run by a serving process's main; the master's never run

    def __repr__(self) -> str:
        return f"<pyngx process {self.kind} {os.getpid()} generation {self.generation}>"


class Runtime(Process):
    """A serving process (worker, agent, single, ``-e``): a `Process` and the parts it owns."""

    __slots__ = ("cycle", "loop", "tree", "timers", "channel", "bus", "servers", "pools", "cluster")

    # The parts `start` makes, in this order (the exit hooks, ``exits``, exist from the
    # start); the exit hooks' orders (`lifecycle`) stop them. What starts later is in
    # docs/architecture.md ("Who a process is").
    STEPS = ("timers", "channel")

    def __init__(self, cycle: Any, kind: str, loop: asyncio.AbstractEventLoop, *, worker_id: int | None = None,
                 worker_count: int = 1, master_pid: int | None = None, prefix: str | None = None,
                 exec_mode: bool = False, table: Tree | None = None) -> None:
        config = cycle.config if cycle is not None else None
        super().__init__(kind, worker_id=worker_id, worker_count=worker_count, master_pid=master_pid,
                         prefix=prefix if prefix is not None else (config.prefix if config is not None else None),
                         config=config, generation=cycle.generation if cycle is not None else 0,
                         shdicts=cycle.zones if cycle is not None else None,
                         globals=cycle.globals if cycle is not None else None, exec_mode=exec_mode)
        self.cycle = cycle  # the generation (`pyngx.proc.cycle.Cycle`), None for ``-e``
        self.events = cycle.events if cycle is not None else None  # what init_by_python registered
        self.loop: asyncio.AbstractEventLoop = loop
        self.tree = table  # the process table the master (or the single process) made
        self.timers: Engine | None = None
        self.channel: Channel | None = None
        self.bus: Bus | None = None
        self.servers: list[Any] = []  # the HTTP servers `pyngx.http.server.start` made here
        self.pools: Pools | None = None  # thread pools, made at the first ngx.run_worker_thread
        self.cluster: Any = None  # its cluster member (python_cluster), made by cluster.current()

    def start(self, max_pending: int, max_running: int) -> None:
        """Make the parts every serving process has, in the order of ``STEPS``."""
        from pyngx.runtime import channel, timers
        from pyngx.runtime import ipcrequest  # noqa: F401 - answers IPC requests here, even with no handler

        makers = {"timers": lambda: timers.start(self, max_pending, max_running),
                  "channel": lambda: channel.start(self)}
        for name in self.STEPS:
            setattr(self, name, makers[name]())


RT: Process = Process()


def current() -> Process:
    """This process's record (a `Runtime` in a serving process)."""
    return RT


def install(record: Process) -> Process:
    """Make RECORD this process's record; returns the one it replaces."""
    global RT
    previous, RT = RT, record
    return previous
