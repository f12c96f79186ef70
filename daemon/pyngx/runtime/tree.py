"""The process table: which workers and agent of this master are alive.

A small anonymous shared mapping that the master creates before its first
fork and writes whenever it starts or reaps a child; every child reads it.
IPC uses it to find the current generation for ``broadcast`` and to check
that a peer belongs to this master; the status endpoint lists it.

It also holds every process's HTTP counters, so the status page can show
totals for the whole server, as nginx's stub_status does: each worker copies
its own counters into its slot's row once per tick (its only writes here
besides ``mark_ready``), and when the master removes a dead child it adds
the row into a "retired" row first, so totals never go backwards on a
reload or a crash.

Each slot is ``pid:i32 kind:i8 ready:i8 worker_id:i16 generation:i32``; a
slot with pid 0 is free. Only the master writes, one aligned 32-bit pid word
last on insert and first on removal, so a reader never sees a half-written
live slot. The pid and version words are stored through ``memoryview`` casts,
one store each: ``struct.pack_into`` zeroes its target and then writes it a
byte at a time, so a reader could catch a pid that is only partly there.
"""
from __future__ import annotations

import mmap
import os
import struct
from array import array
from dataclasses import dataclass

from pyngx.runtime import state

SLOTS = 512
_SLOT = struct.Struct("=ibbhi")  # pid, kind, ready, worker_id, generation
_HEAD = struct.Struct("=ii")  # current generation, master pid
_KINDS = {state.WORKER: 1, state.AGENT: 2, state.SINGLE: 3}
_NAMES = {number: name for name, number in _KINDS.items()}
# A change counter after the slots: bumped after every write, so a reader can
# cache what it derived from the table (IPC's broadcast list) until it moves.
_VERSION_AT = _HEAD.size + SLOTS * _SLOT.size
_VERSION = struct.Struct("=I")
# HTTP counters: one row of u64 per slot, then the retired row; "active" is a gauge
HTTP_FIELDS = ("accepted", "requests", "refused", "1xx", "2xx", "3xx", "4xx", "5xx", "active")
_NF = len(HTTP_FIELDS)
_GAUGES = 1  # the last fields are gauges: not added into the retired row
_COUNTERS_AT = (_VERSION_AT + _VERSION.size + 7) & ~7
_RETIRED = SLOTS * _NF
_SIZE = _COUNTERS_AT + (SLOTS + 1) * _NF * 8
# Event loop health: one row of u64 per slot, written by the process's loop (beat) and its
# watchdog thread (the rest), read by the master (worker_stall_timeout) and the status page.
HEALTH_FIELDS = ("beat_ns", "stalls", "longest_us", "stalled_since_ns", "reported")
_NH = len(HEALTH_FIELDS)
_HEALTH_AT = _SIZE
_SIZE = _HEALTH_AT + SLOTS * _NH * 8


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    kind: str
    worker_id: int | None
    generation: int
    ready: bool


class Tree:
    __slots__ = ("mem", "_pids", "_words", "_rows", "_mine", "_health")

    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, _SIZE, flags=mmap.MAP_SHARED)
        self._pids = memoryview(self.mem).cast("i")  # 4-byte words: every slot's pid is one
        self._words = memoryview(self.mem).cast("I")
        self._rows = memoryview(self.mem)[_COUNTERS_AT:].cast("Q")
        self._mine = (0, -1)  # (pid, slot) of this process's row, once found
        self._health = memoryview(self.mem)[_HEALTH_AT:].cast("Q")

    # -- master side --
    def set_generation(self, generation: int, master_pid: int) -> None:
        _HEAD.pack_into(self.mem, 0, generation, master_pid)
        self._bump()

    def add(self, pid: int, kind: str, worker_id: int | None, generation: int) -> None:
        for i in range(SLOTS):
            off = _HEAD.size + i * _SLOT.size
            if struct.unpack_from("=i", self.mem, off)[0] == 0:
                _SLOT.pack_into(self.mem, off, 0, _KINDS[kind], 0, -1 if worker_id is None else worker_id, generation)
                self._pids[off >> 2] = pid
                self._bump()
                return
        raise RuntimeError("process table full")

    def remove(self, pid: int) -> None:
        """PID is gone (the master reaped it): keep its counts in the retired row, free its slot."""
        off = self._find(pid)
        if off is not None:
            rows, base = self._rows, _slot(off) * _NF
            for i in range(_NF - _GAUGES):
                rows[_RETIRED + i] += rows[base + i]
            rows[base:base + _NF] = array("Q", bytes(8 * _NF))
            self._health[_slot(off) * _NH:(_slot(off) + 1) * _NH] = array("Q", bytes(8 * _NH))
            self._pids[off >> 2] = 0
            self._bump()

    # -- any process --
    def mark_ready(self, pid: int) -> None:
        """A child says it ran init_worker_by_python and can take alerts."""
        off = self._find(pid)
        if off is not None:
            struct.pack_into("=b", self.mem, off + 5, 1)
            self._bump()

    def publish_http(self, values: list[int]) -> bool:
        """This process's HTTP counters (in HTTP_FIELDS order) into its row; False before the
        master has listed it."""
        pid = os.getpid()
        mine, slot = self._mine
        if mine != pid or self._pid_at(slot) != pid:
            off = self._find(pid)
            if off is None:
                return False
            slot = _slot(off)
            self._mine = (pid, slot)
        self._rows[slot * _NF:(slot + 1) * _NF] = array("Q", values)
        return True

    def my_slot(self) -> int:
        """This process's slot, or -1 before the master has listed it."""
        pid = os.getpid()
        mine, slot = self._mine
        if mine != pid or self._pid_at(slot) != pid:
            off = self._find(pid)
            if off is None:
                return -1
            slot = _slot(off)
            self._mine = (pid, slot)
        return slot

    def health_row(self, slot: int) -> memoryview:
        """The health row of SLOT (HEALTH_FIELDS, u64 each), to write in place."""
        return self._health[slot * _NH:(slot + 1) * _NH]

    def health_rows(self) -> dict[int, dict[str, int]]:
        """Each listed process's health row, by pid."""
        h = self._health
        return {pid: dict(zip(HEALTH_FIELDS, h[i * _NH:(i + 1) * _NH].tolist()))
                for i in range(SLOTS) if (pid := self._pid_at(i))}

    def http_rows(self) -> dict[int, list[int]]:
        """Each listed process's published HTTP counters (in HTTP_FIELDS order), by pid."""
        rows = self._rows
        return {pid: rows[i * _NF:(i + 1) * _NF].tolist() for i in range(SLOTS) if (pid := self._pid_at(i))}

    def http_totals(self, own: list[int] | None = None) -> dict[str, int]:
        """Every process's HTTP counters added up, those that exited included; OWN (this
        process's counters, current) replaces its published row."""
        rows = self.http_rows()
        if own is not None and os.getpid() in rows:
            rows[os.getpid()] = own
        totals = self._rows[_RETIRED:_RETIRED + _NF].tolist()
        for row in rows.values():
            totals = [a + b for a, b in zip(totals, row)]
        return dict(zip(HTTP_FIELDS, totals))

    def _pid_at(self, slot: int) -> int:
        return self._pids[(_HEAD.size + slot * _SLOT.size) >> 2]  # type: ignore[no-any-return]

    def version(self) -> int:
        """A counter that changes whenever the table does (cache key for readers)."""
        return _VERSION.unpack_from(self.mem, _VERSION_AT)[0]

    def _bump(self) -> None:
        # written after the data it announces; two writers racing may both
        # write the same value, but each wrote its data before reading it
        self._words[_VERSION_AT >> 2] = (self.version() + 1) & 0xFFFFFFFF

    def generation(self) -> int:
        return _HEAD.unpack_from(self.mem, 0)[0]

    def peers(self, *, current: bool = True) -> list[Peer]:
        """Live children (of the current generation only, by default)."""
        gen = self.generation()
        out = []
        for i in range(SLOTS):
            pid, kind, ready, wid, g = _SLOT.unpack_from(self.mem, _HEAD.size + i * _SLOT.size)
            if pid and (not current or g == gen):
                out.append(Peer(pid, _NAMES.get(kind, "?"), None if wid < 0 else wid, g, bool(ready)))
        return out

    def has(self, pid: int) -> bool:
        return self._find(pid) is not None

    def _find(self, pid: int) -> int | None:
        for i in range(SLOTS):
            off = _HEAD.size + i * _SLOT.size
            if struct.unpack_from("=i", self.mem, off)[0] == pid:
                return off
        return None


def _slot(off: int) -> int:
    return (off - _HEAD.size) // _SLOT.size


def create() -> Tree:
    """Create the table (the master before its first fork, or a single process).

    The master keeps it (``Master.tree``) and hands it to each child it forks,
    whose `core.Runtime` holds it (``core.RT.tree``).
    """
    return Tree()


def single_process() -> Tree:
    """A table holding only this process (master_process off, pyngx -e)."""
    tree = create()
    tree.set_generation(1, os.getpid())
    tree.add(os.getpid(), state.SINGLE, 0, 1)
    tree.mark_ready(os.getpid())
    return tree
