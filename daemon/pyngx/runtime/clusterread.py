"""The node's reader of the cluster's event stream, and its heartbeat.

One process per node reads: it holds the tree-wide lock ``cluster-reader``
(`treelock`, freed by the kernel when it dies), so across a reload or a
respawn the next candidate (the agent, else worker 0) takes over without a
second reader ever running. The reader ``XREAD``s the stream from the last id
it handled and re-posts each event into the node's events bus, in the
stream's order; its position goes to ``logs/cluster-NAME.pos`` under the
prefix after every batch (and to Redis with every heartbeat), so a restarted
node goes on from there. A gap in the events' numbers means the stream's
retention dropped events before this node read them: they are counted and
logged as missed. A unique event goes to the one node that claims its id
first, then to one process there (a unique local post).

The heartbeat (every second) records the node in Redis, reads the list of
nodes seen recently and the stream's head, and leaves a summary in the events
zone for the status page of every process of the node.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import msgpack

from pyngx import log
from pyngx.errors import NoMemoryError
from pyngx.runtime import clusterlink, eventbus, treelock

if TYPE_CHECKING:
    from pyngx.runtime.cluster import Member

LOCK = "cluster-reader"
BLOCK_MS = 1000  # one XREAD waits this long for news
COUNT = 1000  # events per XREAD
HEARTBEAT = 1.0
SEEN = 30.0  # a node is listed while its last heartbeat is this recent
FORGET = 86400.0  # nodes silent this long leave the list in Redis
CLAIM_TTL = 86400  # seconds a unique event's claim lasts
JOIN_MARGIN_MS = 1000  # a new node reads from this long before it started
POSTERS_KEY = "cluster:posters"  # the reader's posters' counts, in the events zone, for the next reader
POS_WIDTH = 64  # bytes of the position file: "ID N", padded (an id is at most 41 characters)
POSTERS = 4096  # posters whose last count the reader remembers
START = "0-0"


class Reader:
    """The stream reader of one node, run by the process that holds LOCK."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.link = clusterlink.Link(member.conf.url, "the event reader")
        self.client = clusterlink.make_client(member.conf.url, BLOCK_MS / 1000 + clusterlink.CALL_TIMEOUT,
                                              single=True)
        self.path = os.path.join(member.prefix, "logs", f"cluster-{member.conf.name}.pos")
        self.locked = False
        self.stopped = False
        self.born_ms = int(time.time() * 1000)
        self._tasks: list[asyncio.Task[None]] = []
        # Position: the last entry handed to the bus, and its number in the cluster's order
        self.last_id: str | None = None
        self.last_n = 0
        self._verify = True  # check the position against the stream at the next (re)connect
        # Counters
        self.handled = 0
        self.missed = 0
        self.claimed_elsewhere = 0
        self.duplicates = 0
        self._posters: dict[str, int] = {}  # poster -> the last count read from it
        self.lag_ms = 0
        self.behind = 0
        self.nodes: list[tuple[str, float]] = []
        self._waited_for_bus = False
        self._zone_full = False
        self._fd = -1  # the position file, open while this process reads
        self._save_failed = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._heartbeat_loop())]
        for task in self._tasks:
            task.add_done_callback(_report)

    def stop(self) -> None:
        """Stop reading now (graceful exit or final); the position is saved and the lock given back."""
        if self.stopped:
            return
        self.stopped = True
        for task in self._tasks:
            task.cancel()
        if self.locked:
            self._save()
            self._hand_over(eventbus.current())
            self._close()
            treelock.unlock(LOCK)
            self.locked = False

    # -- reading --

    async def _read_loop(self) -> None:
        while not self.stopped:
            if not self.locked:
                if not treelock.try_lock(LOCK):
                    await asyncio.sleep(0.25)  # another process of this node reads (an old generation's)
                    continue
                self.locked = True
                self._verify = True
                self.last_id = None
            bus = eventbus.current()
            if bus is None:
                if not self._waited_for_bus:
                    self._waited_for_bus = True
                    log.warn("cluster: events are not configured in this process (events.configure): "
                             "cluster events wait until they are")
                await asyncio.sleep(0.1)
                continue
            try:
                if self.last_id is None or self._verify:
                    fresh = self.last_id is None
                    await self._find_position()
                    if fresh:
                        self._take_over(bus)
                    self.link.ok()
                reply: Any = await self.client.xread({self.member.keys.stream: self.last_id or START},
                                                count=COUNT, block=BLOCK_MS)
                self.link.ok()
                if reply:
                    await self._handle(bus, reply[0][1])  # a failed claim: the batch is read again
            except clusterlink.TROUBLE as exc:
                self.link.failed(exc)
                self._verify = True
                await asyncio.sleep(self.link.backoff())

    async def _find_position(self) -> None:
        """Where to read from: our file, else Redis's record of this node, else a new node's start.

        A position numbered beyond the cluster's counter means Redis lost its
        data (restarted without persistence): read the new stream from its start.
        """
        keys = self.member.keys
        if self.last_id is None:
            self.last_id, self.last_n = self._load() or await self._remote_position() or self._joined()
            log.info(f'cluster: this process reads the events of cluster "{self.member.conf.name}" for node '
                     f'"{self.member.node}", after {self.last_id}')
        seq = int(await self.client.get(keys.seq) or 0)
        if self.last_n > seq:
            log.warn(f'cluster: cluster "{self.member.conf.name}" has numbered {seq} events, this node had read '
                     f"{self.last_n} (Redis lost its data?): reading the stream from its start")
            self.last_id, self.last_n = START, 0
        self._verify = False

    async def _remote_position(self) -> tuple[str, int] | None:
        text = await self.client.hget(self.member.keys.node(self.member.node), "pos")
        return _parse_pos(_decode(text)) if text else None

    def _joined(self) -> tuple[str, int]:
        """A new node reads what was posted from a little before it started (by its own clock).

        Its own workers may post before this reader has looked at the stream,
        so "the end of the stream when the reader starts" would lose those.
        """
        return f"{self.born_ms - JOIN_MARGIN_MS}-0", 0

    async def _handle(self, bus: eventbus.Bus, entries: list[Any]) -> None:
        """Post ENTRIES into the node's bus in order; stop before one that does not fit."""
        claims = await self._claims(entries)
        for entry_id, fields in entries:
            entry = _decode(entry_id)
            n = int(fields.get(b"n", 0))
            try:
                source, event, data, unique, _node, _pid, poster, count = msgpack.unpackb(fields[b"p"])
            except Exception as exc:  # noqa: BLE001 - a foreign entry in our stream
                log.error(f"cluster: failed decoding event {entry}: {exc}")
                self._advance(entry, n)
                continue
            if count <= self._posters.get(poster, 0):
                self.duplicates += 1
                self._advance(entry, n)
                continue
            if unique is not None and not claims.get(entry, False):
                self.claimed_elsewhere += 1
                self._note(poster, count)
                self._advance(entry, n)
                continue
            try:
                bus.post(source, event, data, f"cluster:{entry}" if unique is not None else None)
            except NoMemoryError:  # the node's zone is full: try again from this entry shortly
                if not self._zone_full:
                    log.warn("cluster: the events zone is full, cluster events wait for room")
                self._zone_full = True
                self._save()
                bus.poll()
                await asyncio.sleep(0.05)
                return
            self.handled += 1
            self._zone_full = False
            self._note(poster, count)
            self._advance(entry, n)
        self._save()
        bus.poll()  # this process's handlers now; the others are woken at the end of this turn
        if self.last_id is not None:  # how old the last event was when it was handed over
            self.lag_ms = max(0, int(time.time() * 1000) - int(self.last_id.split("-", 1)[0]))

    def _note(self, poster: str, count: int) -> None:
        """POSTER's post COUNT is done with: a copy of it (its batch sent twice) is skipped.

        Posters append in order, so the last count of each is enough.
        """
        self._posters.pop(poster, None)
        self._posters[poster] = count
        if len(self._posters) > POSTERS:
            del self._posters[next(iter(self._posters))]  # the poster silent longest

    async def _claims(self, entries: list[Any]) -> dict[str, bool]:
        """Claim every unique event of the batch in one round trip: True where this node won."""
        unique_ids = []
        for entry_id, fields in entries:
            try:
                if msgpack.unpackb(fields[b"p"])[3] is not None:
                    unique_ids.append(_decode(entry_id))
            except Exception:  # noqa: BLE001 - _handle logs it
                continue
        if not unique_ids:
            return {}
        keys, node = self.member.keys, self.member.node
        won = await clusterlink.evalsha_many(self.member.client, [
            ("claim", [keys.claim(entry)], [node, CLAIM_TTL]) for entry in unique_ids])
        return {entry: bool(result) for entry, result in zip(unique_ids, won)}

    def _advance(self, entry: str, n: int) -> None:
        if self.last_n and n > self.last_n + 1:
            gap = n - self.last_n - 1
            self.missed += gap
            log.warn(f'cluster: missed {gap} events of cluster "{self.member.conf.name}": the stream\'s retention '
                     "(python_cluster_retention) dropped them before this node read them")
        elif n and n <= self.last_n:
            log.warn(f"cluster: the cluster's event numbers started over at {n} (Redis lost its data?)")
        self.last_id, self.last_n = entry, n

    # -- the position file --

    def _load(self) -> tuple[str, int] | None:
        try:
            with open(self.path, encoding="ascii") as f:
                return _parse_pos(f.read())
        except (OSError, ValueError):
            return None

    def _save(self) -> None:
        """Write the position in place: one ``pwrite`` of a fixed-width line on a file kept open.

        A write of a few bytes at offset 0 is whole or absent for the other
        processes and after a crash of this one (a write-and-rename cost a
        millisecond per batch on this path). A damaged file only sends the next
        reader to Redis's copy of the position.
        """
        if self.last_id is None:
            return
        try:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.pwrite(self._fd, f"{self.last_id} {self.last_n}".ljust(POS_WIDTH - 1).encode() + b"\n", 0)
        except OSError as exc:
            if not self._save_failed:
                log.warn(f'cluster: cannot save the position to "{self.path}" ({exc.errno}: {exc.strerror})')
            self._save_failed = True

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- heartbeat and status --

    async def _heartbeat_loop(self) -> None:
        while not self.stopped:
            if self.locked:
                try:
                    await self._beat()
                except clusterlink.TROUBLE as exc:
                    self.member.link.failed(exc)
                else:
                    self.member.link.ok()
                self._publish()
            await asyncio.sleep(HEARTBEAT)

    async def _beat(self) -> None:
        keys, node = self.member.keys, self.member.node
        now = time.time()
        pipe = self.member.client.pipeline(transaction=False)
        pipe.zadd(keys.nodes, {node: now})
        fields: dict[Any, Any] = {"pid": os.getpid(), "handled": self.handled, "missed": self.missed,
                                  "lag_ms": self.lag_ms}
        if self.last_id is not None:
            fields["pos"] = f"{self.last_id} {self.last_n}"
        pipe.hset(keys.node(node), mapping=fields)
        pipe.expire(keys.node(node), int(FORGET))  # a node gone for a day is forgotten, its position too
        pipe.zremrangebyscore(keys.nodes, 0, now - FORGET)
        pipe.zrangebyscore(keys.nodes, now - SEEN, "+inf", withscores=True)
        pipe.get(keys.seq)
        *_, seen, seq = await pipe.execute()
        self.nodes = [(_decode(name), round(now - score, 3)) for name, score in seen]
        self.behind = max(0, int(seq or 0) - self.last_n) if self.last_id is not None else 0

    def statistics(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "link": self.link.statistics(), "last_id": self.last_id, "last_n": self.last_n,
                "handled": self.handled, "missed": self.missed, "claimed_elsewhere": self.claimed_elsewhere,
                "duplicates": self.duplicates,
                "lag_ms": self.lag_ms, "behind": self.behind,
                "nodes": [{"name": name, "seen_ago": ago} for name, ago in self.nodes]}

    def _publish(self) -> None:
        """Leave the summary in the events zone for the other processes' status pages."""
        from pyngx.runtime.cluster import STATUS_KEY

        bus = eventbus.current()
        if bus is None:
            return
        try:
            bus.zone.safe_set(STATUS_KEY, msgpack.packb(self.statistics()), 3 * HEARTBEAT + 1)
        except Exception as exc:  # noqa: BLE001 - the zone is full: the status page shows less
            log.debug(f"cluster: could not publish the status: {exc}")
        self._hand_over(bus)

    def _hand_over(self, bus: eventbus.Bus | None) -> None:
        """Leave the posters' last counts, with the position they belong to, for the next reader.

        The next reader of this node (a reload, a respawn) then still skips a copy
        of a batch that straddles the hand-over.
        """
        if bus is None or self.last_id is None:
            return
        try:
            bus.zone.safe_set(POSTERS_KEY, msgpack.packb([self.last_id, self._posters]))
        except Exception as exc:  # noqa: BLE001 - the zone is full: copies may then pass once
            log.debug(f"cluster: could not leave the posters' counts: {exc}")

    def _take_over(self, bus: eventbus.Bus) -> None:
        """Start from the last reader's posters' counts when they are not newer than our position."""
        blob = bus.zone.get(POSTERS_KEY)
        if not isinstance(blob, bytes) or self.last_id is None:
            return
        try:
            entry, posters = msgpack.unpackb(blob)
            if _id_key(entry) <= _id_key(self.last_id):
                self._posters = dict(posters)
        except Exception as exc:  # noqa: BLE001 - a damaged value: start with none
            log.debug(f"cluster: ignoring the posters' counts left in the zone: {exc}")


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.exception("cluster: the event reader failed", task.exception())  # type: ignore[arg-type]


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def _parse_pos(text: str) -> tuple[str, int]:
    entry, n = text.split()
    _id_key(entry)  # ValueError for a damaged file
    return entry, int(n)
