"""The master: build a generation, fork its children, keep them, reload, stop.

The loop is synchronous and runs no event loop across fork (python/asyncio#347).
Signal handlers only record: CPython's C-level handler writes the signal
number to a non-blocking self-pipe (``signal.set_wakeup_fd``), so a signal
that arrives at any moment wakes the next ``select`` and is never lost. The
loop blocks on that pipe and on the children's status pipe, drains both, then
acts in nginx's fixed order (``ngx_master_process_cycle``): reap, terminate,
quit, reload, reopen, then the due deadlines (respawn back-off, kill timers).
"""
from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass

from pyngx import log
from pyngx.conf.model import Config
from pyngx.proc import boot, pidfile, service, spawn
from pyngx.proc import cycle as cycles
from pyngx.proc.child import parse_status
from pyngx.proc.cycle import Cycle, CycleError
from pyngx.runtime import core, state, tree

# What each signal asks of the master; the loop acts in ORDER, whatever the arrival order.
SIGNALS = {
    signal.SIGCHLD: "reap",
    signal.SIGTERM: "terminate",
    signal.SIGINT: "terminate",
    signal.SIGQUIT: "quit",
    signal.SIGHUP: "reload",
    signal.SIGUSR1: "reopen",
}
ORDER = ("reap", "terminate", "quit", "reload", "reopen")
READY_TIMEOUT = 20.0  # a new generation that is not serving by then is reported as failed
FAST_KILL_AFTER = 3.0  # TERM, then KILL what is left (nginx escalates after about a second)
QUIT_KILL_GRACE = 5.0  # on top of worker_shutdown_timeout, for a child that ignores its bound
MAX_BACKOFF = 5.0
GIVE_UP_AFTER = 3  # early deaths of a new generation's child before a reload is rolled back


@dataclass(slots=True)
class ChildInfo:
    pid: int
    kind: str
    worker_id: int | None
    generation: int
    started: float
    ready: bool = False
    init_error: str = ""  # what its init_worker_by_python raised, for the reload verdict


@dataclass(slots=True)
class Pending:
    """A generation started and not yet serving (the first one, or a reload)."""

    generation: int
    deadline: float
    reload: bool


def serve(config: Config, argv: list[str], conf_path: str, prefix: str, extra: list[str]) -> int:
    """Run the daemon described by CONFIG until it stops; returns the exit code."""
    if not config.master_process:
        from pyngx.proc import single

        return single.serve(config, argv, conf_path, prefix, extra)
    # Held until the loop can act on them: a HUP during a slow init_by_python must not
    # kill the master with the default action (nginx blocks its signals just as early).
    signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    started = boot.start(config, state.MASTER)
    if started is None:
        return 1
    cycle, _, pid = started  # the cycle holds the credentials
    boot.set_master_title(argv)
    master = Master(cycle, conf_path, prefix, extra, pid)
    return master.run()


def _on_signal(signo: int, frame: object) -> None:
    """Nothing: the C handler already wrote SIGNO to the wake-up pipe."""


class Master:
    """The master's state: the live cycle, its children, deadlines; `run` is the loop."""

    def __init__(self, cycle: Cycle, conf_path: str, prefix: str, extra: list[str], pid: int) -> None:
        self.tree = tree.create()  # before the first fork: every child maps the same table
        self.cycle = cycle  # the live generation: everything its config owns (pyngx.proc.cycle)
        self.conf_path, self.prefix, self.extra = conf_path, prefix, extra
        self.pid = pid
        self.children: dict[int, ChildInfo] = {}
        self.old_cycles: list[Cycle] = []
        self.pending: Pending | None = None
        self.reload_deferred = False
        self.reload_seq = 0
        self.reload_from = ""  # the pid file a signaller read before this reload's HUP: its verdict goes there
        self.verdicts: set[str] = set()  # pid paths with a verdict beside them, removed at exit
        self.stopping = ""  # "", "graceful" or "fast"
        self.kill_at: float | None = None
        self.old_kill_at: float | None = None
        self.failed_kill: tuple[float, int] | None = None  # (when, generation) to KILL a rolled-back one
        self.respawns: list[tuple[float, str, int | None]] = []
        self.fails: dict[tuple[str, int | None], int] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.status_r, self.status_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.status_r, False)
        self.status_buf = b""
        self.stall_check_at = time.monotonic()  # worker_stall_timeout: when to look at the beats next
        self.stalled: dict[int, str] = {}  # pid -> what was done about its stall (stalls.replace)
        self.term_signo = signal.SIGTERM  # which of TERM and INT asked for the fast stop

    @property
    def creds(self) -> spawn.Credentials | None:
        return self.cycle.creds

    # -- the loop --

    def run(self) -> int:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signo in SIGNALS:
            signal.signal(signo, _on_signal)
        for signo in (signal.SIGUSR2, signal.SIGWINCH, signal.SIGPIPE):
            signal.signal(signo, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNALS))
        self.tree.set_generation(self.cycle.generation, self.pid)
        log.notice(f"pyngx/{boot.version()} master process {self.pid} started")
        boot.preload()
        boot.hand_logs_to(self.cycle.config, self.creds)
        self.start_generation()
        while self.stopping == "" or self.children:
            actions = self.wait()
            self.act(actions)
        return self.finish()

    def wait(self) -> set[str]:
        """Block until a signal, a status message or the next deadline; return what to do."""
        timeout = self.next_deadline()
        try:
            readable, _, _ = select.select([self.wake_r, self.status_r], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            readable = []
        actions = {"reap"}  # reaping is cheap and makes a lost SIGCHLD harmless
        if self.wake_r in readable:
            try:
                data = os.read(self.wake_r, 4096)
            except BlockingIOError:
                data = b""
            actions.update(SIGNALS[s] for s in data if s in SIGNALS)
            if signal.SIGINT in data or signal.SIGTERM in data:
                self.term_signo = signal.SIGINT if signal.SIGTERM not in data else signal.SIGTERM
        if self.status_r in readable:
            self.read_status()
        return actions

    def act(self, actions: set[str]) -> None:
        for action in ORDER:
            if action in actions:
                getattr(self, action)()
        self.run_deadlines()

    def next_deadline(self) -> float | None:
        times = [t for t in (self.kill_at, self.old_kill_at, self.stall_check_at) if t is not None]
        times += [self.failed_kill[0]] if self.failed_kill is not None else []
        times += [t for t, _, _ in self.respawns]
        if self.pending is not None and self.pending.deadline != float("inf"):
            times.append(self.pending.deadline)
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    # -- children --

    def start_generation(self) -> None:
        reload = bool(self.old_cycles)
        # No full collection now: it would cost tens of milliseconds on the way to the first
        # answer. The master collects once the generation serves (start) or the old one left.
        cycles.freeze(collect=False)
        cycle = self.cycle
        for kind, wid in self.slots(cycle):
            self.spawn(kind, wid)
        # The first generation has no bound: systemd's TimeoutStartSec judges a start that
        # never serves, and READY=1 must not be sent before the workers answer.
        deadline = time.monotonic() + READY_TIMEOUT if reload else float("inf")
        self.pending = Pending(cycle.generation, deadline, reload)

    def spawn(self, kind: str, worker_id: int | None) -> None:
        cycle = self.cycle
        mine = {id(s) for s in cycle.all_sockets()}
        stale = [s.fileno() for old in self.old_cycles for s in old.all_sockets() if id(s) not in mine]
        try:
            pid = spawn.fork(cycle, kind, worker_id, master_pid=self.pid, status_fd=self.status_w, table=self.tree,
                             close_fds=[self.wake_r, self.wake_w, self.status_r, *stale], creds=self.creds)
        except OSError as exc:
            log.alert(f'fork() failed while spawning "{kind} process" ({exc.errno}: {exc.strerror})')
            self.respawns.append((time.monotonic() + 1.0, kind, worker_id))
            return
        self.children[pid] = ChildInfo(pid, kind, worker_id, cycle.generation, time.monotonic())
        self.tree.add(pid, kind, worker_id, cycle.generation)
        log.notice(f"start {kind} process {pid}")

    def read_status(self) -> None:
        try:
            self.status_buf += os.read(self.status_r, 4096)
        except BlockingIOError:
            return
        records, self.status_buf = parse_status(self.status_buf)
        for kind, pid, text in records:
            info = self.children.get(pid)
            if info is None:
                continue
            if kind == b"E":  # init_worker_by_python raised (it serves on; b"R" follows)
                info.init_error = text
                continue
            info.ready = True
            self.tree.mark_ready(pid)
        self.check_pending()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped(pid, status)

    def reaped(self, pid: int, status: int) -> None:
        info = self.children.pop(pid, None)
        self.stalled.pop(pid, None)
        self.tree.remove(pid)
        for cyc in (self.cycle, *self.old_cycles):
            for zone in cyc.zones.values():
                zone.force_unlock(pid)
        if info is None:
            return
        code = log_exit(info, status)
        self.release_old_cycles()
        if self.stopping or info.generation != self.cycle.generation:
            return
        if code == spawn.FATAL:
            return
        self.schedule_respawn(info)
        self.check_pending()

    def schedule_respawn(self, info: ChildInfo) -> None:
        key = (info.kind, info.worker_id)
        # Only a child that died before it was ready is in a crash loop; a ready one that was
        # killed (OOM killer, an operator, a kill storm) is replaced at once, as nginx does.
        early = not info.ready
        fails = self.fails.get(key, 0) + 1 if early else 0
        self.fails[key] = fails
        delay = 0.0 if fails <= 1 else min(0.1 * 2 ** (fails - 2), MAX_BACKOFF)
        pending = self.pending
        if pending is not None and pending.reload and fails >= GIVE_UP_AFTER:
            self.generation_settled(False, f"new {info.kind} processes keep exiting right after start")
            return
        if delay:
            log.warn(f"{info.kind} process keeps exiting right after start, respawning in {delay:g}s")
        self.respawns.append((time.monotonic() + delay, info.kind, info.worker_id))

    def run_deadlines(self) -> None:
        now = time.monotonic()
        due = [r for r in self.respawns if r[0] <= now]
        self.respawns = [r for r in self.respawns if r[0] > now]
        if not self.stopping:
            for _, kind, wid in due:
                self.spawn(kind, wid)
        if self.pending is not None and now >= self.pending.deadline:
            self.generation_settled(False, f"new worker processes not ready after {READY_TIMEOUT:g}s")
        if now >= self.stall_check_at:
            from pyngx.proc import stalls  # the master's alone, imported after its first forks

            stalls.replace(self.tree, self.children, self.stalled, self.cycle.config.worker_stall_timeout)
            self.stall_check_at = now + stalls.interval(self.cycle.config.worker_stall_timeout)
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self.signal_children(signal.SIGKILL, lambda c: True)
        if self.old_kill_at is not None and now >= self.old_kill_at:
            self.old_kill_at = None
            self.signal_children(signal.SIGKILL, lambda c: c.generation != self.cycle.generation)
        if self.failed_kill is not None and now >= self.failed_kill[0]:
            failed, self.failed_kill = self.failed_kill[1], None
            self.signal_children(signal.SIGKILL, lambda c: c.generation == failed)

    def signal_children(self, signo: int, which: object) -> None:
        for info in list(self.children.values()):
            if which(info):  # type: ignore[operator]
                if signo == signal.SIGKILL:
                    log.alert(f"{info.kind} process {info.pid} did not exit in time, killing it")
                try:
                    os.kill(info.pid, signo)
                except ProcessLookupError:
                    pass

    # -- generations --

    def check_pending(self) -> None:
        pending = self.pending
        if pending is None:
            return
        current = [c for c in self.children.values() if c.generation == pending.generation]
        if len(current) >= len(self.slots(self.cycle)) and all(c.ready for c in current):
            self.generation_settled(True, "")

    def generation_settled(self, ok: bool, why: str) -> None:
        """The pending generation serves (or did not in time): answer, retire the old one."""
        pending = self.pending
        assert pending is not None
        self.pending = None
        if pending.reload:
            if ok:
                log.notice(f"reload: generation {pending.generation} is serving")
                self.retire_old()
            else:
                log.alert(f"reload: {why}; the old worker processes keep serving")
                self.roll_back(why)
            self.answer_reload(ok, why or "serving")
        elif not ok:
            log.alert(why)
        else:
            boot.announce(self.cycle.config, self.pid)
            cycles.freeze(collect=True)  # the start-up garbage, now that the children have forked
        service.notify_ready(self.pid)
        if self.reload_deferred:
            self.reload_deferred = False
            self.reload()

    def roll_back(self, why: str) -> None:
        """The new generation never served: stop it, and the previous one is current again."""
        failed, previous = self.cycle, self.old_cycles.pop()
        self.respawns.clear()
        self.fails.clear()
        self.signal_children(signal.SIGTERM, lambda c: c.generation == failed.generation)
        # a child stuck in init_worker_by_python does not act on TERM
        self.failed_kill = (time.monotonic() + FAST_KILL_AFTER, failed.generation)
        self.old_cycles.append(failed)  # released once its children are reaped
        self.adopt(previous, failed)
        if previous.config.error_log != failed.config.error_log:
            log.alert(f"reload: {why}; the old worker processes keep serving")
        alive = {(c.kind, c.worker_id) for c in self.children.values() if c.generation == previous.generation}
        for slot in self.slots(previous):
            if slot not in alive:  # died while the reload was pending: replace it now
                self.respawns.append((time.monotonic(), *slot))

    def slots(self, cyc: Cycle) -> list[tuple[str, int | None]]:
        """(kind, worker id) of every child a generation should have."""
        out: list[tuple[str, int | None]] = [(state.WORKER, i) for i in range(cyc.config.worker_processes)]
        return out + ([(state.AGENT, None)] if cyc.want_agent else [])

    @staticmethod
    def restore_globals(cyc: Cycle) -> None:
        core.install(core.Process(state.MASTER, worker_count=cyc.config.worker_processes, master_pid=os.getpid(),
                                  prefix=cyc.config.prefix, config=cyc.config, generation=cyc.generation,
                                  shdicts=cyc.zones, globals=cyc.globals))
        core.RT.events = cyc.events

    def retire_old(self) -> None:
        """QUIT the old generation's children; kill them if they outlive their bound."""
        old = [c for c in self.children.values() if c.generation != self.cycle.generation]
        for info in old:
            try:
                os.kill(info.pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass
        if old:
            self.old_kill_at = time.monotonic() + self.cycle.config.worker_shutdown_timeout + QUIT_KILL_GRACE
        for cyc in self.old_cycles:
            cyc.close_sockets(keep=self.cycle)
        self.release_old_cycles()

    def release_old_cycles(self) -> None:
        """Forget old cycles none of whose children are alive (zones, sockets, globals)."""
        alive = {c.generation for c in self.children.values()}
        keep = []
        for cyc in self.old_cycles:
            if cyc.generation in alive or self.pending is not None:
                keep.append(cyc)
            else:
                cyc.close_sockets(keep=self.cycle)
                cyc.release_zones(keep=self.cycle)
        released = len(keep) < len(self.old_cycles)
        self.old_cycles = keep
        if released and not self.stopping:
            cycles.freeze(collect=True)  # the old namespace and its modules are garbage now

    def answer_reload(self, ok: bool, message: str) -> None:
        self.reload_seq += 1
        status = pidfile.OK if ok else pidfile.FAILED
        failed = [c for c in self.children.values() if c.generation == self.cycle.generation and c.init_error]
        if ok and failed:  # it serves, as in OpenResty, but the operator hears of it
            status = pidfile.INIT_FAILED
            message = "; ".join(f"{c.kind} process {c.pid}: {c.init_error}" for c in failed)
        path = self.reload_from or self.cycle.pid_path
        self.verdicts.add(path)
        pidfile.write_verdict(path, self.pid, self.reload_seq, status, message)

    # -- signal actions, in ORDER --

    def terminate(self) -> None:
        if self.stopping == "fast":
            return
        log.notice(f"signal {int(self.term_signo)} ({self.term_signo.name}) received, exiting")
        self.begin_stop("fast", signal.SIGTERM, FAST_KILL_AFTER)

    def quit(self) -> None:
        if self.stopping:
            return
        log.notice("signal 3 (SIGQUIT) received, shutting down")
        self.begin_stop("graceful", signal.SIGQUIT, self.cycle.config.worker_shutdown_timeout + QUIT_KILL_GRACE)

    def begin_stop(self, how: str, signo: int, kill_after: float) -> None:
        self.stopping = how
        service.notify_stopping()
        if self.pending is not None and self.pending.reload:
            self.answer_reload(False, "the master is shutting down")
        self.pending = None
        self.respawns.clear()
        self.signal_children(signo, lambda c: True)
        self.kill_at = time.monotonic() + kill_after
        # the children hold their own copies; the master stops listening at once (nginx does)
        for cyc in (self.cycle, *self.old_cycles):
            cyc.close_sockets()

    def reload(self) -> None:
        if self.stopping:
            return
        if self.pending is not None and self.pending.reload:
            self.reload_deferred = True  # one reload at a time; this one follows
            return
        log.notice("signal 1 (SIGHUP) received, reconfiguring")
        self.reload_from = self.cycle.pid_path
        service.notify_reloading()
        try:
            new = self.build_next()
        except CycleError as err:
            log.emerg(str(err))
            if err.detail:
                log.error(err.detail.rstrip())
            self.answer_reload(False, str(err))
            service.notify_ready(self.pid)
            return
        self.old_cycles.append(self.cycle)
        self.adopt(new, self.cycle)
        self.fails.clear()
        self.start_generation()

    def adopt(self, new: Cycle, old: Cycle) -> None:
        """Make NEW the live generation instead of OLD (a reload's commit, or its rollback).

        The one reference is swapped; what lives outside this process follows it: the
        error log the master writes to, the pid file, the owner of the log files, the
        tree's current generation and the master's record (`core.RT`).
        """
        self.cycle = new
        if new.config.error_log != old.config.error_log:
            try:
                log.error_log.open(new.config.error_log.path, new.config.error_log.level)
            except OSError as exc:
                log.alert(f'open() "{new.config.error_log.path}" failed ({exc.errno}: {exc.strerror})')
        self.move_pid_file(old.pid_path, new.pid_path)
        boot.hand_logs_to(new.config, new.creds)
        self.tree.set_generation(new.generation, self.pid)
        self.restore_globals(new)

    def move_pid_file(self, before: str, after: str) -> None:
        """A generation with another ``pid`` writes its file and removes the old one (nginx does)."""
        if before == after:
            return
        try:
            pidfile.write(after, self.pid)
        except OSError as exc:
            log.alert(exc.strerror or str(exc))
            return
        pidfile.unlink_if_ours(before, self.pid)

    def build_next(self) -> Cycle:
        """Load and build the next generation. Raises CycleError; changes nothing then."""
        from pyngx import conf  # the loader is a sibling room; imported where it is needed

        try:
            config = conf.load(self.conf_path, self.prefix, self.extra)
        except Exception as exc:  # ConfError, or an OSError reading the file
            raise CycleError(str(exc)) from None
        try:
            creds = spawn.credentials(config)
        except KeyError as exc:
            raise CycleError(str(exc.args[0])) from None
        return cycles.build(config, self.cycle, generation=self.cycle.generation + 1, creds=creds)

    def reopen(self) -> None:
        log.notice("signal 10 (SIGUSR1) received, reopening logs")
        log.reopen_all()
        boot.hand_logs_to(self.cycle.config, self.creds)  # workers running as `user` reopen them next
        self.signal_children(signal.SIGUSR1, lambda c: True)

    def finish(self) -> int:
        cycles.save_persisted(self.cycle)
        path = self.cycle.pid_path
        pidfile.unlink_if_ours(path, self.pid)
        for where in self.verdicts | {path}:
            pidfile.remove_verdict(where)
        log.notice("exit")
        return 0


def log_exit(info: ChildInfo, status: int) -> int:
    """Log how a child ended, in nginx's words; returns its exit code (-signal if killed)."""
    name = f"{info.kind} process {info.pid}"
    if os.WIFSIGNALED(status):
        signo = os.WTERMSIG(status)
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        log.alert(f"{name} exited on signal {signo}{core}")
        return -signo
    code = os.waitstatus_to_exitcode(status)
    if code == spawn.FATAL:
        log.alert(f"{name} exited with fatal code {code} and cannot be respawned")
    else:
        log.notice(f"{name} exited with code {code}")
    return code
