"""The worker-events log: one ordered event log inside a shared dict zone.

Owns the log layout, a process's read position, garbage collection of
records, unique claims and the poll loop of one `Bus`. Knows nothing of
argument checking (`pyngx.events`), of which process it runs in, nor of the
handler registry beyond ``registry.matching(source, event)``
(`pyngx.runtime.eventbus` wires all that).

After Kong's lua-resty-worker-events 2.x (a global id from ``incr``, records
in the zone, a poll loop), with three changes its users ask for:

- **No loss.** A record is written with ``safe_add`` (it never evicts) and is
  deleted only once every live process of the tree has read past it, so a
  post that cannot be kept raises NoMemoryError at once. The original lets
  the LRU evict records nobody has read yet and drops them later with
  "waiting for event data timed out".
- **Wake-ups.** A post wakes the other processes over IPC (one wake-up per
  loop turn however many posts), so delivery does not wait for ``interval``.
- **A slow reader only slows collection**, never another process's delivery.

Zone layout (every key starts with ``ev:`` so the zone may hold other data):

    ev:seq          the last sequence number handed out (incr: one global order)
    ev:r:N          record N: msgpack [pid, source, event, data, claim] or TOMBSTONE
    ev:p:PID        the last sequence number process PID has read
    ev:gc           records up to this number have been collected
    ev:u:UNIQUE     marker of a unique post: repeats are dropped while it lives
    ev:c:PID:K      claim counter of one unique event: the first incr handles it
    ev:s:PID        PID's spare chunk: freed to make room for a tombstone
    ev:w:PID        1 while PID may be between taking a number and writing it

A failed post must still fill its sequence number, or every reader would
wait ``wait_max`` on the hole. So a process takes a number only while it
holds a spare (one 64-byte chunk); when the record does not fit, the spare
is deleted and the tombstone takes its place. Without a spare the post fails
before it takes a number.

A reader that finds a number taken but not written yet waits while a live
process has its ``ev:w`` flag up (set before taking a number, cleared at the
end of that loop turn, so a burst costs two writes, not two per post); only
a hole whose poster is gone (it died between the two steps) is skipped. The
original skips after ``wait_max`` even when the poster is only slow.
"""
from __future__ import annotations

import asyncio
import inspect
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from pyngx import log
from pyngx.errors import KeyExistsError, KeyNotFoundError, NoMemoryError
from pyngx.runtime import phase, repeats

SOURCE = "worker-events"
SEQ = "ev:seq"
MARK = "ev:gc"
TOMBSTONE = b"\xc0"  # msgpack nil: a sequence number whose post failed
WAKE = "__pyngx_events_wake"  # reserved IPC name
BATCH = 1000  # records handled per loop turn by the background loop
GC_EVERY = 512  # records read between two collections


def record_key(n: int) -> str:
    return f"ev:r:{n}"


def pos_key(pid: int) -> str:
    return f"ev:p:{pid}"


def spare_key(pid: int) -> str:
    return f"ev:s:{pid}"


def flag_key(pid: int) -> str:
    return f"ev:w:{pid}"


class Handlers(Protocol):
    """What a Bus needs of the handler registry (`pyngx.runtime.eventbus.Registry`)."""

    def matching(self, source: str, event: str) -> list[Callable[..., Any]]: ...

    def count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Settings:
    timeout: float = 2.0
    interval: float = 1.0
    wait_interval: float = 0.010
    wait_max: float = 0.5
    shm_retries: int = 999


class Bus:
    """This process's view of the event log in ZONE."""

    def __init__(self, zone: Any, name: str, settings: Settings, registry: Handlers, *,
                 pid: int | None = None, peers: Callable[[], Iterable[int]] | None = None,
                 wake_others: Callable[[], None] | None = None) -> None:
        self.zone, self.name, self.settings, self.registry = zone, name, settings, registry
        self.pid = os.getpid() if pid is None else pid
        self.peers = peers or (lambda: (self.pid,))
        self.wake_others = wake_others
        # Read side
        self.pos = 0  # the last sequence number read here
        self._stored = 0  # the position last written to the zone
        self._collected_at = 0  # our position at the last collection
        self._busy = False
        self._local: deque[tuple[str, str, Any]] = deque()
        # Post side
        self._claims = 0
        self._mine: dict[int, bytes] = {}  # our own recent records: read without the zone
        self._spare = False
        self._flagged = False  # our ev:w flag is up until the end of this loop turn
        # Background loop
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._spawned: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.stats = {"posted": 0, "posted_local": 0, "dropped_unique": 0, "handled": 0, "lost": 0,
                      "handler_errors": 0, "collected": 0, "wakeups_sent": 0, "wakeups_received": 0}

    # -- joining and leaving the log --

    def join(self) -> None:
        """Register this process's position: events posted from now on reach it.

        A placeholder 0 goes in first so that no collector deletes a record
        we may need between reading ``ev:seq`` and storing our position.

        Raises NoMemoryError when the zone cannot hold the position.
        """
        for key in (SEQ, MARK):
            _add_quietly(self.zone, key, 0)
        self.zone.safe_set(pos_key(self.pid), 0)
        self.zone.safe_set(flag_key(self.pid), 0)
        self._ensure_spare()
        self.pos = self._seq()
        self._stored = 0
        self._store_pos()
        self._collected_at = self.pos

    def leave(self) -> None:
        """Stop the loop and give up our position, so collection goes on without us."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            self.zone.delete(pos_key(self.pid))
            self.zone.delete(spare_key(self.pid))
            self.zone.delete(flag_key(self.pid))
        except Exception as exc:  # noqa: BLE001 - a zone closed under us at exit
            log.debug(f"worker-events: could not drop position: {exc}")

    # -- posting --

    def post(self, source: str, event: str, data: Any, unique: str | None) -> bool:
        """Append one event to the log; False when a repeat of UNIQUE was dropped.

        Raises NoMemoryError (nothing kept, nothing half-written) or TypeError
        for data msgpack cannot carry.
        """
        if unique is not None:
            return self._post_unique(source, event, data, unique)
        blob = _pack([self.pid, source, event, data, None])
        if not self._spare:
            self._ensure_spare()
        self._append(blob)
        return True

    def _post_unique(self, source: str, event: str, data: Any, unique: str) -> bool:
        claim = f"ev:c:{self.pid}:{self._claims}"
        blob = _pack([self.pid, source, event, data, claim])
        self._ensure_spare()
        marker = f"ev:u:{unique}"
        try:
            self._safe_add(marker, 1, exptime=self.settings.timeout)
        except KeyExistsError:
            self.stats["dropped_unique"] += 1
            return False
        self._claims += 1
        try:
            self._safe_add(claim, 0)
            self._append(blob)
        except BaseException:
            self.zone.delete(marker)
            self.zone.delete(claim)
            raise
        return True

    def _append(self, blob: bytes) -> None:
        """Take the next sequence number and write BLOB under it; on failure a tombstone."""
        lower_now = not self._flagged and not self._raise_flag()
        zone = self.zone
        try:
            try:
                n = zone.incr(SEQ, 1)
            except KeyNotFoundError:  # the zone was flushed under us: start the log again
                _add_quietly(zone, SEQ, 0)
                n = zone.incr(SEQ, 1)
            key = f"ev:r:{n}"
            try:
                zone.safe_add(key, blob)
                if len(self._mine) < 4096:
                    self._mine[n] = blob
            except NoMemoryError:
                try:
                    self._safe_add(key, blob, collect_first=True)
                except BaseException:
                    self._tombstone(n)
                    raise
            except BaseException:
                self._tombstone(n)
                raise
        finally:
            if lower_now:
                self._lower_flag()
        self.stats["posted"] += 1
        self._wake.set()

    def post_local(self, source: str, event: str, data: Any) -> None:
        self._local.append((source, event, data))
        self.stats["posted_local"] += 1
        self._wake.set()

    def _safe_add(self, key: str, value: Any, exptime: float = 0, *, collect_first: bool = False) -> None:
        """safe_add, collecting what every process has read when the zone is full."""
        retries = min(self.settings.shm_retries, 3)
        if collect_first and (retries <= 0 or not self.collect()):
            raise NoMemoryError()
        while True:
            try:
                self.zone.safe_add(key, value, exptime)
                return
            except NoMemoryError:
                if retries <= 0 or not self.collect():
                    raise
                retries -= 1

    def _ensure_spare(self) -> None:
        """Hold a spare chunk before taking a sequence number (see the module doc)."""
        if not self._spare:
            try:
                self._safe_add(spare_key(self.pid), b"")
            except KeyExistsError:
                pass
            self._spare = True

    def _tombstone(self, n: int) -> None:
        """Fill sequence number N whose post failed, in the room of our spare.

        One zone step (``swap``): deleting the spare and then adding the tombstone
        let another process take the freed chunk in between, and the hole stayed.
        """
        self._spare = False
        try:
            self.zone.swap(spare_key(self.pid), record_key(n), TOMBSTONE)
        except KeyExistsError:
            self.zone.delete(spare_key(self.pid))
        except Exception as exc:  # noqa: BLE001 - readers step over the hole once our flag is down
            log.warn(f"worker-events: could not mark failed event {n}: {exc}")

    def _raise_flag(self) -> bool:
        """Say "between a number and its record" until the end of this loop turn."""
        try:
            self.zone.incr(flag_key(self.pid), 1)
        except KeyNotFoundError:
            self.zone.safe_set(flag_key(self.pid), 1)
        self._flagged = True
        try:
            asyncio.get_running_loop().call_soon(self._end_turn)
        except RuntimeError:  # no loop here (a test): the post lowers it itself
            return False
        return True

    def _end_turn(self) -> None:
        """Lower our flag and wake the others: one write and one wake-up per loop turn."""
        self._lower_flag()
        if self.wake_others is not None and not self.closed:
            try:
                self.wake_others()
                self.stats["wakeups_sent"] += 1
            except Exception as exc:  # noqa: BLE001 - the poll interval still delivers
                log.debug(f"worker-events: wake-up failed: {exc}")

    def _lower_flag(self) -> None:
        if self._flagged:
            self._flagged = False
            if self.closed:
                return  # leave() deleted the flag with our other keys
            try:
                self.zone.safe_set(flag_key(self.pid), 0)
            except Exception as exc:  # noqa: BLE001 - a zone closed under us at exit
                log.debug(f"worker-events: could not lower the post flag: {exc}")

    def woken(self) -> None:
        """Another process posted: poll soon."""
        self.stats["wakeups_received"] += 1
        self._wake.set()

    # -- reading --

    def poll(self, limit: int = 0) -> str:
        """Handle local events, then the log (at most LIMIT records when > 0).

        Returns "recursive" inside a handler, "done" when caught up, "more"
        when LIMIT stopped it, "wait" when the next record is not written yet.
        """
        if self._busy:
            return "recursive"
        self._busy = True
        token = phase.set(phase.EVENT)
        try:
            while self._local:
                source, event, data = self._local.popleft()
                self.dispatch(source, event, data, None)
            return self._read(limit)
        finally:
            phase.reset(token)
            self._busy = False

    def _read(self, limit: int) -> str:
        seq = self._seq()
        if seq < self.pos:
            log.warn(f"worker-events: the event log in \"{self.name}\" was reset, reading from {seq}")
            self.pos = seq
            self._mine.clear()
        end = min(seq, self.pos + limit) if limit > 0 else seq
        get, unpack, matching, mine = self.zone.get, msgpack.unpackb, self.registry.matching, self._mine
        result = "done"
        handled = 0
        try:
            while self.pos < end:
                n = self.pos + 1
                blob = mine.pop(n, None) if mine else None
                if blob is None:
                    blob = get(f"ev:r:{n}")
                    if blob is None and not self._hole(n):
                        result = "wait"
                        break
                self.pos = n
                if blob is None or blob == TOMBSTONE:
                    continue
                try:
                    pid, source, event, data, claim = unpack(blob)
                except Exception as exc:  # noqa: BLE001 - a foreign value under our key
                    log.error(f"worker-events: failed decoding event {n}: {exc}")
                    continue
                if claim is not None and not self._claim(claim):
                    continue
                handled += 1
                for fn in matching(source, event):  # dispatch(), inlined: this is the hot loop
                    try:
                        res = fn(data, event, source, pid)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as exc:  # noqa: BLE001 - the user's handler, whatever it raised
                        self._failed(exc, source, event, pid)
                        continue
                    if res is not None and inspect.isawaitable(res):
                        self._spawn(res, source, event)
            else:
                if self.pos < seq:
                    result = "more"
        finally:
            self.stats["handled"] += handled
        self._store_pos()
        return result

    def _hole(self, n: int) -> bool:
        """Record N is not there: True to step over it (its poster is gone), False to wait."""
        get = self.zone.get
        for pid in self.peers():
            if pid != self.pid and get(flag_key(pid)):
                return False  # a live process is between a number and its record
        if get(record_key(n)) is not None:
            return False  # written meanwhile (its poster lowered its flag): read it now
        log.error(f"worker-events: dropping event {n}: its poster did not write it and is no longer posting")
        self.stats["lost"] += 1
        return True

    def _claim(self, key: str) -> bool:
        """True for the one process whose incr comes first (unique events)."""
        try:
            first = self.zone.incr(key, 1) == 1
        except KeyNotFoundError:
            return False  # claimed, handled and deleted by another process
        if first:
            self.zone.delete(key)
        return first

    def dispatch(self, source: str, event: str, data: Any, pid: int | None) -> None:
        """Call every matching handler with (data, event, source, pid); poll() set phase EVENT."""
        self.stats["handled"] += 1
        for fn in self.registry.matching(source, event):
            try:
                result = fn(data, event, source, pid)
                if result is not None and inspect.isawaitable(result):
                    self._spawn(result, source, event)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the user's handler, whatever it raised
                self._failed(exc, source, event, pid)

    def _spawn(self, awaitable: Any, source: str, event: str) -> None:
        task = asyncio.ensure_future(awaitable)
        self._spawned.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._spawned.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._failed(t.exception(), source, event, None)  # type: ignore[arg-type]

        task.add_done_callback(done)

    def _failed(self, exc: BaseException, source: str, event: str, pid: int | None) -> None:
        self.stats["handler_errors"] += 1
        repeats.exception(f"worker-events: event callback failed; source={source}, event={event}, pid={pid}", exc)

    def _seq(self) -> int:
        value = self.zone.get(SEQ)
        return int(value) if value is not None else 0

    def _store_pos(self) -> None:
        delta = self.pos - self._stored
        if delta:
            key = pos_key(self.pid)
            try:
                self.zone.incr(key, delta)
            except KeyNotFoundError:
                self.zone.safe_set(key, self.pos)
            self._stored = self.pos
        if self.pos - self._collected_at >= GC_EVERY:
            self.collect()

    # -- collection --

    def low_water(self) -> int:
        """The lowest position of the live processes that joined the log."""
        low = self.pos
        for pid in self.peers():
            value = self.zone.get(pos_key(pid))
            if value is not None:
                low = min(low, int(value))
        return min(low, self._stored)

    def collect(self) -> int:
        """Delete the records every live process has read; returns how many."""
        self._collected_at = self.pos
        low = self.low_water()
        mark = self.zone.get(MARK) or 0
        if low <= mark:
            return 0
        try:
            self.zone.safe_set(MARK, low)
        except NoMemoryError:
            pass  # the mark only saves work: the next collector deletes from further back
        zone = self.zone
        for n in range(mark + 1, low + 1):
            zone.delete(record_key(n))
        self.stats["collected"] += low - mark
        return low - mark

    # -- the background loop --

    def start(self) -> None:
        """Run the poll loop on the running event loop (unless interval is 0)."""
        if self._task is None and self.settings.interval > 0 and not self.closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop in this thread (a test): poll() still delivers
            self._task = loop.create_task(self._run())

    def restart(self) -> None:
        """Settings changed: wake the loop, or start or stop it for interval 0."""
        if self.settings.interval <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None
        self.start()
        self._wake.set()

    async def _run(self) -> None:
        while not self.closed:
            self._wake.clear()
            try:
                result = self.poll(BATCH)
            except Exception as exc:  # noqa: BLE001 - keep delivering
                repeats.exception("worker-events: poll failed", exc)
                result = "done"
            if result == "more":
                await asyncio.sleep(0)
            elif result == "wait":
                await asyncio.sleep(self.settings.wait_interval)
            else:
                try:
                    async with asyncio.timeout(self.settings.interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def drain(self) -> None:
        """Poll until this process has read everything posted so far (graceful exit)."""
        target = self._seq()
        while not self.closed and self.pos < target:
            result = self.poll(BATCH)
            if result == "recursive":
                return
            await asyncio.sleep(self.settings.wait_interval if result == "wait" else 0)

    def statistics(self) -> dict[str, Any]:
        seq = self._seq()
        return {"configured": True, "shm": self.name, **self.stats, "position": self.pos, "sequence": seq,
                "backlog": max(0, seq - self.pos), "handlers": self.registry.count(),
                "interval": self.settings.interval}


_packer = msgpack.Packer()


def _pack(value: Any) -> bytes:
    try:
        return _packer.pack(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"event data cannot be serialized: {exc}") from None


def _add_quietly(zone: Any, key: str, value: Any) -> None:
    try:
        zone.safe_add(key, value)
    except KeyExistsError:
        pass
