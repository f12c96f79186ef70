"""The event loop watchdog of one process: see a blocked loop, say where, count it.

Owns the heartbeat and one watching thread. The loop beats every ``tick``
(a ``call_later`` that stores ``monotonic_ns()`` into this process's health row
of the process table, `tree.HEALTH_FIELDS`); the thread wakes when the loop
would be late by the threshold and compares. When no beat came for longer than ``worker_stall_warn`` (plus the
tick the next beat was due after) it logs one warning with the main thread's
Python stack, naming the config file and line of the user's block it is in;
when the loop runs again it logs how long the stall lasted. Past
``worker_stall_timeout`` it logs the stack once more at ``alert`` and marks the
row "reported": the master (`pyngx.proc.stalls`) then replaces the process.

A thread cannot see a loop held by C code that keeps the GIL: then neither
warning appears, and the master still replaces the process from the beats,
after a SIGUSR2 on which ``faulthandler`` (registered here, on the error log's
descriptor) writes every thread's stack from C, GIL or not.
Knows nothing of HTTP or of the master.
"""
from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import inspect
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType

from pyngx import log
from pyngx.conf.model import Chunk, Config
from pyngx.runtime import core

BEAT, STALLS, LONGEST_US, SINCE, REPORTED = range(5)  # tree.HEALTH_FIELDS


@dataclass(frozen=True, slots=True)
class Block:
    """A user's Python block: where its code starts, and how to name it."""

    filename: str  # the compiled code's co_filename
    line: int
    label: str


def tick_for(warn: float | None, timeout: float | None) -> float:
    """The beat interval: a quarter of the shortest threshold, between 5 and 50 ms."""
    shortest = min(t for t in (warn, timeout, 0.2) if t is not None)
    return max(0.005, min(0.05, shortest / 4))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "off"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


class Watchdog:
    """Beats on LOOP; a thread warns past WARN seconds and reports past TIMEOUT (None: off)."""

    __slots__ = ("loop", "warn", "timeout", "tick", "blocks", "beat_ns", "row", "main", "stop_event", "thread",
                 "kind", "stalls", "longest", "stalled_since", "outer")

    def __init__(self, loop: asyncio.AbstractEventLoop, warn: float | None, timeout: float | None,
                 blocks: Iterable[Block], kind: str) -> None:
        self.loop, self.warn, self.timeout, self.kind = loop, warn, timeout, kind
        self.tick = tick_for(warn, timeout)
        self.blocks = sorted(blocks, key=lambda b: (b.filename, b.line))
        self.beat_ns = time.monotonic_ns()
        self.row: memoryview | None = None
        self.main = threading.get_ident()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.stalls = 0
        self.longest = 0.0
        self.stalled_since = 0  # the last beat before the stall being watched (0: none)
        self.outer: set[int] = set()  # ids of the frames that run the loop (left out of stacks)

    def start(self) -> None:
        """Start beating and watching; called from a coroutine running on LOOP."""
        self.main = threading.get_ident()
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and not frame.f_code.co_flags & inspect.CO_COROUTINE:
            frame = frame.f_back
        frame = frame.f_back if frame is not None else None
        while frame is not None:  # the caller of run_until_complete and its callers
            self.outer.add(id(frame))
            frame = frame.f_back
        self._beat()
        self.thread = threading.Thread(target=self._watch, name="pyngx-watchdog", daemon=True)
        self.thread.start()
        if self.timeout is not None:
            register_dump()
            log.on_reopen(register_dump)  # the error log's descriptor may change

    def stop(self, graceful: bool = True) -> None:
        self.stop_event.set()

    # -- on the loop --

    def _beat(self) -> None:
        now = self.beat_ns = time.monotonic_ns()
        row = self.row
        table = core.RT.tree
        if row is None and table is not None:
            slot = table.my_slot()  # -1 until the master has listed this process
            if slot >= 0:
                row = self.row = table.health_row(slot)
        if row is not None:
            row[BEAT] = now
        if not self.stop_event.is_set():
            self.loop.call_later(self.tick, self._beat)

    # -- in the watchdog thread --

    def _watch(self) -> None:
        """Sleep until the loop would be late by the threshold; look; again.

        While the loop is healthy this wakes once per threshold (5 times a second at
        200ms), not once per beat: each wake-up takes the GIL from the loop's thread, and
        on a busy machine the OS may park this thread while it holds it. During a stall
        it looks once per tick, for the end and the timeout.
        """
        tick_ns = int(self.tick * 1e9)
        first = self.warn if self.warn is not None else self.timeout
        assert first is not None
        first_ns = int(first * 1e9) + tick_ns
        timeout_ns = int(self.timeout * 1e9) + tick_ns if self.timeout is not None else 0
        reported = False
        wait = first_ns / 1e9
        while not self.stop_event.wait(wait):
            beat, now = self.beat_ns, time.monotonic_ns()
            wait = self.tick
            if self.stalled_since:
                if beat != self.stalled_since:
                    self._ended((beat - self.stalled_since - tick_ns) / 1e9)
                    reported = False
                elif timeout_ns and not reported and now - beat > timeout_ns:
                    reported = True
                    self._report((now - beat - tick_ns) / 1e9)
            elif now - beat > first_ns:
                self._began(beat, (now - beat - tick_ns) / 1e9)
            else:
                wait = max(self.tick, (beat + first_ns - now) / 1e9 + 0.001)

    def _began(self, beat: int, lasted: float) -> None:
        self.stalled_since = beat
        self.stalls += 1
        if self.row is not None:
            self.row[STALLS] = self.stalls
            self.row[SINCE] = beat
        if self.warn is not None:
            log.warn(f"event loop of this {self.kind} process blocked for {lasted:.3f}s "
                     f"(worker_stall_warn {_duration(self.warn)}){self._where()}")

    def _ended(self, lasted: float) -> None:
        self.stalled_since = 0
        self.longest = max(self.longest, lasted)
        if self.row is not None:
            self.row[LONGEST_US] = int(self.longest * 1e6)
            self.row[SINCE] = 0
            self.row[REPORTED] = 0
        if self.warn is not None:
            log.warn(f"event loop of this {self.kind} process ran again after a stall of {lasted:.3f}s")

    def _report(self, lasted: float) -> None:
        log.alert(f"event loop of this {self.kind} process blocked for {lasted:.3f}s "
                  f"(worker_stall_timeout {_duration(self.timeout)}), the master replaces it{self._where()}")
        if self.row is not None:
            self.row[REPORTED] = 1

    def _where(self) -> str:
        """`` in BLOCK at FILE:LINE, stack (most recent call last):`` and the main thread's stack."""
        frame = sys._current_frames().get(self.main)
        if frame is None:
            return ""
        frames = []
        inner: FrameType | None = frame
        while inner is not None and id(inner) not in self.outer:
            frames.append((inner, inner.f_lineno))
            inner = inner.f_back
        stack = "".join(traceback.StackSummary.extract(reversed(frames)).format()).rstrip()
        return f"{self._user_block(frame)}, stack (most recent call last):\n{stack}"

    def _user_block(self, frame: FrameType | None) -> str:
        """The innermost frame in one of the config's Python blocks, named by its block."""
        while frame is not None:
            filename, line = frame.f_code.co_filename, frame.f_lineno
            match = None
            for block in self.blocks:
                if block.filename == filename and block.line <= line:
                    match = block
            if match is not None:
                return f" in {match.label} at {filename}:{line}"
            frame = frame.f_back
        return ""


def register_dump() -> None:
    """SIGUSR2 writes every thread's Python stack to the error log (the master's last resort)."""
    faulthandler.register(signal.SIGUSR2, file=log.error_log.fd, all_threads=True, chain=False)


def blocks_of(config: Config) -> list[Block]:
    """Every Python block of CONFIG that runs in a worker, named as in the config."""
    http = config.http
    if http is None:
        return []
    out = [Block(c.code.co_filename, c.line, f"{name}_by_python") for name, c in _chunks(http)]
    for server in http.servers:
        for loc in server.locations:
            where = f"location {loc.modifier + ' ' if loc.modifier else ''}{loc.pattern}"
            out += [Block(c.code.co_filename, c.line, f"{name}_by_python of {where}") for name, c in _chunks(loc)]
    return out


def _chunks(node: object) -> list[tuple[str, Chunk]]:
    """(field name, chunk) of every Python block a config node holds, whatever its phase."""
    return [(f.name, value) for f in dataclasses.fields(node)  # type: ignore[arg-type]
            if isinstance(value := getattr(node, f.name), Chunk)]
