"""The one process main: a worker, the privileged agent, the single process, ``pyngx -e``.

In order (docs/architecture.md "Process main"): title; the loop (created
here, after the fork) and the process's `core.Runtime`, installed as
``core.RT``; then the steps of ``START``: its timers and IPC socket
(``Runtime.start``), the watchdog, ``init_worker_by_python``, the cluster,
ready in the process table, HTTP for workers and single; then run until QUIT (graceful), TERM/INT (fast) or the master's death
(graceful). ``-e`` runs its code instead of serving, then waits for its
timers. Knows nothing of the master's bookkeeping: it reports readiness
with one write on the status pipe.
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from pyngx import log
from pyngx.conf.directives import default
from pyngx.http import server
from pyngx.proc import service
from pyngx.proc.cycle import Cycle
from pyngx.runtime import core, lifecycle, phase, state, tree, usercode, watchdog
from pyngx.runtime import loop as loops

TITLES = {
    state.WORKER: "pyngx: worker process",
    state.AGENT: "pyngx: privileged agent process",
    state.SINGLE: "pyngx: single process",
}
READY = struct.Struct("=ci")  # b"R", pid: one atomic pipe write (< PIPE_BUF)
# b"E", pid, length, then that many bytes of text: init_worker_by_python raised (before b"R")
INIT_ERROR = struct.Struct("=ciH")
MAX_INIT_ERROR = 1024  # the record stays one atomic pipe write
MASTER_CHECK = 1.0  # seconds between getppid() checks (PR_SET_PDEATHSIG is the fast path)


def parse_status(buf: bytes) -> tuple[list[tuple[bytes, int, str]], bytes]:
    """The whole records at the start of BUF as (kind, pid, text), and what is left."""
    out = []
    while len(buf) >= READY.size:
        if buf[:1] != b"E":
            _, pid = READY.unpack_from(buf)
            out.append((b"R", pid, ""))
            buf = buf[READY.size:]
            continue
        if len(buf) < INIT_ERROR.size:
            break
        _, pid, length = INIT_ERROR.unpack_from(buf)
        end = INIT_ERROR.size + length
        if len(buf) < end:
            break
        out.append((b"E", pid, buf[INIT_ERROR.size:end].decode("utf-8", "replace")))
        buf = buf[end:]
    return out, buf


def set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - a dependency; titles are cosmetic
        return
    setproctitle.setproctitle(title)


def run(cycle: Cycle | None, kind: str, worker_id: int | None, *, master_pid: int, status_fd: int,
        table: tree.Tree, code: Any = None) -> int:
    """Run a child, the single process or ``pyngx -e`` CODE to its end; returns the exit code.

    TABLE is the process table. CYCLE is None only for ``-e`` (no config: `pyngx.proc.single.run_code`
    made the process record, whose prefix, zones and namespace it keeps).
    """
    if cycle is not None:
        set_title(TITLES[kind])
        cycle = keep_sockets(cycle, worker_id if kind != state.AGENT else None)
        usercode.pin_sources(cycle.sources)
    loop = loops.new_loop()
    booted = core.RT
    rt = core.Runtime(cycle, kind, loop, worker_id=worker_id, master_pid=master_pid,
                      worker_count=cycle.config.worker_processes if cycle and kind != state.SINGLE else 1,
                      prefix=None if cycle is not None else booted.prefix, exec_mode=cycle is None,
                      table=table)
    if cycle is None:
        rt.generation, rt.shdicts, rt.globals = 1, booted.shdicts, booted.globals
    core.install(rt)
    proc = Child(rt, status_fd)
    try:
        return loop.run_until_complete(proc.main() if code is None else proc.exec(code))
    finally:
        _close_loop(loop)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # noqa: BLE001 - the process is leaving anyway
        pass
    loop.close()


def keep_sockets(cycle: Cycle, worker_id: int | None) -> Cycle:
    """Close this process's copies of the sockets worker WORKER_ID does not accept on.

    The agent (None) listens on nothing; worker N keeps the shared
    sockets and socket N of each reuseport group, so the kernel spreads the
    connections of that address between the workers.
    """
    mine = cycle.for_worker(worker_id)
    kept = {id(s) for s in mine.values()}
    for sock in cycle.all_sockets():
        if id(sock) not in kept:
            sock.close()  # this process's copy only; the master and other workers keep theirs
    return cycle.kept_by(worker_id)


class Child:
    """One serving process's main: its stop request and the steps of its life."""

    __slots__ = ("rt", "cycle", "kind", "loop", "status_fd", "stop", "http")

    def __init__(self, rt: core.Runtime, status_fd: int) -> None:
        self.rt, self.cycle, self.kind, self.loop, self.status_fd = rt, rt.cycle, rt.kind, rt.loop, status_fd
        self.stop: asyncio.Future[str] = self.loop.create_future()
        self.http: Any = None

    async def main(self) -> int:
        self._wire_signals()
        for step in START:
            await step(self)
        self._report_ready()
        if self.kind != state.SINGLE:
            self._watch_master()
        how = await self.stop
        if how == "graceful":
            set_title(TITLES[self.kind] + " is shutting down")
            await self.rt.exits.graceful(self.cycle.config.worker_shutdown_timeout)
        else:
            self.rt.exits.final(False)
        return 0

    async def exec(self, chunk: Any) -> int:
        """``pyngx -e``: run CHUNK, then every timer it started; 0, 1 when it raised, 130 on INT."""
        task = asyncio.current_task()
        assert task is not None
        self.loop.add_signal_handler(signal.SIGINT, task.cancel)
        self.rt.start(default("python_max_pending_timers"), default("python_max_running_timers"))
        engine = self.rt.timers
        assert engine is not None
        status = 0
        try:
            try:
                await usercode.run_module_async(chunk, self.rt.globals, phase.EXEC)
            except phase.Exit:  # ngx.exit(): the code ends there; its timers still run
                pass
            await engine.wait_idle()
        except asyncio.CancelledError:
            self.rt.exits.final(False)
            return 130
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - the user's code: report it, exit 1
            log.stderr(usercode.format_exception(exc).rstrip())
            status = 1
            await engine.wait_idle()
        await self.rt.exits.graceful(default("worker_shutdown_timeout"))  # -e: its last timers
        return status

    def request_stop(self, how: str) -> None:
        if not self.stop.done():
            if self.kind != state.SINGLE and os.getppid() != self.rt.master_pid:
                log.warn(f"master process {self.rt.master_pid} is gone, exiting")  # PR_SET_PDEATHSIG
            self.stop.set_result(how)
        elif how == "fast" and self.stop.result() == "graceful":
            # a second, fast request while shutting down gracefully: give up waiting
            self.rt.exits.final(False)
            os._exit(0)

    def _on_stop_signal(self, signo: signal.Signals, how: str) -> None:
        if self.kind == state.SINGLE and not self.stop.done():  # the master logs it otherwise
            doing = "shutting down" if how == "graceful" else "exiting"
            log.notice(f"signal {int(signo)} ({signo.name}) received, {doing}")
        self.request_stop(how)

    def _wire_signals(self) -> None:
        add = self.loop.add_signal_handler
        add(signal.SIGQUIT, self._on_stop_signal, signal.SIGQUIT, "graceful")
        add(signal.SIGTERM, self._on_stop_signal, signal.SIGTERM, "fast")
        add(signal.SIGINT, self._on_stop_signal, signal.SIGINT, "fast")
        add(signal.SIGUSR1, log.reopen_all)
        if self.kind == state.SINGLE:
            add(signal.SIGHUP, log.warn, "reload is not supported with \"master_process off\", ignored")
        else:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master reloads; a child does not
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.signal(signal.SIGWINCH, signal.SIG_IGN)
        service.unblock_child_signals()  # blocked since before fork(); what came meanwhile runs now

    def _report_ready(self) -> None:
        self._report(READY.pack(b"R", os.getpid()))

    def _report(self, record: bytes) -> None:
        if self.status_fd < 0:
            return
        try:
            os.write(self.status_fd, record)
        except OSError:
            pass  # the master is gone; the death watch ends us

    def _watch_master(self) -> None:
        """Exit gracefully when the master disappears (a killed master leaves no orphans)."""
        master = self.rt.master_pid

        def check() -> None:
            if os.getppid() != master:
                self.request_stop("graceful")  # logs that the master is gone
            elif not self.stop.done():
                self.loop.call_later(MASTER_CHECK, check)

        self.loop.call_later(MASTER_CHECK, check)


# -- the start of a serving process, step by step (in the order of START, below) --

async def _parts(proc: Child) -> None:
    """The Runtime's own parts (timers, IPC socket: ``Runtime.STEPS``), with the config's timer limits."""
    http = proc.cycle.config.http
    if http is None:
        proc.rt.start(default("python_max_pending_timers"), default("python_max_running_timers"))
    else:
        proc.rt.start(http.max_pending_timers, http.max_running_timers)


async def _watchdog(proc: Child) -> None:
    start_watchdog(proc.cycle, proc.kind, proc.loop)


async def _init_worker(proc: Child) -> None:
    """init_worker_by_python; what it raised goes to the master before the ready record."""
    error = await run_init_worker(proc.cycle)
    if error:
        proc._report(INIT_ERROR.pack(b"E", os.getpid(), len(error)) + error)


async def _cluster(proc: Child) -> None:
    start_cluster(proc.cycle, proc.kind)


async def _listed_ready(proc: Child) -> None:
    """Ready in the process table: IPC broadcasts reach this process from now on."""
    table = proc.rt.tree
    assert table is not None
    table.mark_ready(os.getpid())


async def _http(proc: Child) -> None:
    """Workers and single serve HTTP (unless a stop came meanwhile)."""
    if proc.kind in (state.WORKER, state.SINGLE) and not proc.stop.done():
        proc.http = start_http(proc.rt)


def start_watchdog(cycle: Cycle, kind: str, loop: asyncio.AbstractEventLoop) -> None:
    """The event loop watchdog (worker_stall_warn, worker_stall_timeout), unless both are off."""
    config = cycle.config
    timeout = config.worker_stall_timeout if kind != state.SINGLE else None  # no master to replace us
    if config.worker_stall_warn is None and timeout is None:
        return
    dog = watchdog.Watchdog(loop, config.worker_stall_warn, timeout, watchdog.blocks_of(config), kind)
    dog.start()
    core.RT.exits.on_final(dog.stop)


def start_cluster(cycle: Cycle, kind: str) -> None:
    """Join the cluster (``python_cluster``); the node's reader is the agent, else worker 0."""
    http = cycle.config.http
    if http is None or http.cluster is None:
        return  # nothing of the cluster is imported
    from pyngx.runtime import cluster

    reader = kind == state.AGENT or (core.RT.worker_id == 0 and not cycle.want_agent)
    try:
        cluster.start(http.cluster, reader)
    except Exception as exc:  # noqa: BLE001 - the node serves on without the cluster
        log.exception("cluster: cannot start", exc)


async def run_init_worker(cycle: Cycle) -> bytes:
    """init_worker_by_python; an error is logged and the process serves on (as OpenResty).

    Returns b"" or, when it raised, one line for the reload verdict
    (``ZeroDivisionError: division by zero in conf/pyngx.conf:40``).
    """
    http = cycle.config.http
    if http is not None and http.exit_worker is not None:
        chunk = http.exit_worker
        core.RT.exits.on_begin(lambda: run_exit_worker(chunk, cycle.globals), order=lifecycle.EXIT_WORKER)
    if http is None or http.init_worker is None:
        return b""
    try:
        await usercode.run_module_async(http.init_worker, cycle.globals, phase.INIT_WORKER)
    except Exception as exc:  # noqa: BLE001 - the user's code
        log.error("init_worker_by_python error: " + usercode.format_exception(exc).rstrip())
        return usercode.summary(exc).encode("utf-8", "replace")[:MAX_INIT_ERROR]
    return b""


def run_exit_worker(chunk: Any, namespace: dict[str, Any]) -> None:
    """exit_worker_by_python, at the start of a graceful exit (before timers fire premature)."""
    try:
        usercode.run_module(chunk, namespace, phase.EXIT_WORKER)
    except Exception as exc:  # noqa: BLE001 - the user's code
        log.exception("exit_worker_by_python error", exc)


def start_http(rt: core.Runtime) -> Any:
    """The HTTP server of runtime RT on its generation's sockets (None without an http block)."""
    http = rt.cycle.config.http
    if http is None:
        return None
    return server.start(rt, http, rt.cycle.sockets)


# The start of a worker, the agent and the single process, in this one order (then the ready
# record to the master). What each step starts stops through ``rt.exits`` in the orders
# `pyngx.runtime.lifecycle` declares: HTTP stops accepting, exit_worker_by_python runs, timers
# fire premature, events post ``stopping``; then the waits; then the finals.
START: tuple[Callable[[Child], Awaitable[None]], ...] = (
    _parts, _watchdog, _init_worker, _cluster, _listed_ready, _http)
