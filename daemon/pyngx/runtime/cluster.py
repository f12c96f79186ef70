"""This process's membership of the cluster (``python_cluster``): posts, leases, the reader.

Owns the per-process `Member`: the bounded outbox of cluster posts and the
task that appends them to the cluster's Redis Stream, the leases of cluster
jobs, the node's stream reader when this process is the node's reader
(`pyngx.runtime.clusterread`), the exit hooks and the status counters.

Nothing here runs, and the redis package is never imported, unless the
config has ``python_cluster``: the process main calls `start()` only then,
and `pyngx.events` / `pyngx.timer` import this module only for a
``cluster=True`` post or a ``scope="cluster"`` job. Redis trouble never
blocks the loop: every call to Redis is awaited in a task of its own with
bounded timeouts, and the callers (a request posting an event, a timer
falling due) only touch memory.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import secrets
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack

from pyngx import log
from pyngx.errors import Error
from pyngx.runtime import core, lifecycle

if TYPE_CHECKING:
    from pyngx.conf.model import ClusterConf
    from pyngx.runtime.clusterlease import Lease
    from pyngx.runtime.clusterread import Reader

BATCH = 1000  # posts per script call (one round trip)
STATUS_KEY = "cluster:status"  # the reader's view of the node, in the events zone
FLUSH_AT_EXIT = 2.0  # seconds a graceful exit waits for the outbox to reach Redis


def default_node(prefix: str) -> str:
    """The host name and a short hash of the prefix: stable across restarts, unique per prefix."""
    digest = hashlib.blake2b(os.path.abspath(prefix).encode(), digest_size=3).hexdigest()
    return f"{socket.gethostname()[:48]}-{digest}"


class Member:
    """What one process does in the cluster."""

    def __init__(self, conf: ClusterConf, prefix: str, reader_candidate: bool) -> None:
        from pyngx.runtime import clusterlink  # the redis package, from here on

        self.conf = conf
        self.node = conf.node or default_node(prefix)
        self.prefix = prefix
        self.keys = clusterlink.Keys(conf.name)
        self.link = clusterlink.Link(conf.url, f"process {os.getpid()}")
        self.client = clusterlink.make_client(conf.url)
        self.loop = asyncio.get_running_loop()
        # Posting
        self.outbox: deque[tuple[bytes, str]] = deque()  # (payload, unique or "")
        # Each post carries (poster, count): a batch sent again after a lost answer
        # is appended twice, and readers skip what they saw from that poster already.
        self.poster = secrets.token_hex(6)
        self._count = 0
        self.pid = os.getpid()
        self._pack = msgpack.Packer().pack
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.posted = 0  # appended to the stream
        self.refused = 0  # posts refused: the outbox was full
        self.dropped_unique = 0  # repeats of a unique post dropped by Redis
        # Jobs and reading
        self.leases: dict[str, Lease] = {}
        self.reader: Reader | None = None
        self.closed = False
        self._started = False
        if reader_candidate:
            self.become_candidate()

    def become_candidate(self) -> None:
        """This process may read the stream for its node (the agent, else worker 0)."""
        if self.reader is None:
            from pyngx.runtime.clusterread import Reader

            self.reader = Reader(self)

    # -- posting --

    def post(self, source: str, event: str, data: Any, unique: str | None) -> bool:
        """Queue one event for the stream. Raises Error when the outbox is full, TypeError for bad data."""
        if len(self.outbox) >= self.conf.buffer:
            self.refused += 1
            why = f"Redis unreachable: {self.link.last_error}" if self.link.last_error and not self.link.connected \
                else "Redis has not taken them yet"
            raise Error(f"cluster post refused: {len(self.outbox)} events already wait for Redis ({why})")
        try:
            payload = self._pack([source, event, data, unique, self.node, self.pid, self.poster, self._count + 1])
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"event data cannot be serialized: {exc}") from None
        self._count += 1
        self.outbox.append((payload, unique or ""))
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._flush_loop())
            self._flusher.add_done_callback(_report)
        self._wake.set()
        return True

    async def _flush_loop(self) -> None:
        from pyngx.runtime import clusterlink

        while not self.closed:
            if not self.outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self.outbox, BATCH))
            try:
                [results] = await clusterlink.evalsha_many(self.client, [self._post_call(batch)])
            except clusterlink.TROUBLE as exc:
                self.link.failed(exc)
                await asyncio.sleep(self.link.backoff())
                continue
            self.link.ok()
            for result in results:
                self.outbox.popleft()
                if result:
                    self.posted += 1
                else:
                    self.dropped_unique += 1

    def _post_call(self, batch: list[tuple[bytes, str]]) -> tuple[str, list[str], list[Any]]:
        keys = self.keys
        args: list[Any] = [self.conf.retention, int(_unique_timeout() * 1000), keys.unique("")]
        for payload, unique in batch:
            args += (payload, unique)
        return ("post", [keys.stream, keys.seq], args)

    # -- jobs --

    def lease(self, name: str) -> Lease:
        """The lease of cluster job NAME in this process (made on first use)."""
        found = self.leases.get(name)
        if found is None:
            from pyngx.runtime.clusterlease import Lease

            found = self.leases[name] = Lease(self, name)
        return found

    # -- life --

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        lifecycle.on_begin(self._begin, order=lifecycle.EVENTS - 1)
        lifecycle.on_wait(self._wait)
        lifecycle.on_final(self._final)
        if self.reader is not None:
            self.reader.start()

    def _begin(self) -> None:
        """Graceful exit began: the reader stops at a batch's end and hands the node over."""
        if self.reader is not None:
            self.reader.stop()

    async def _wait(self) -> None:
        """Send what is queued (while Redis answers, at most a few seconds) and give leases back."""
        deadline = self.loop.time() + FLUSH_AT_EXIT
        while self.outbox and self.link.connected and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        releases = [lease.release() for lease in self.leases.values()]
        if releases:
            await asyncio.wait([asyncio.ensure_future(r) for r in releases], timeout=1.0)
        await self.aclose()

    async def aclose(self) -> None:
        """Close this process's connections to Redis (Redis sees a clean goodbye)."""
        clients = [self.client] + ([self.reader.client] if self.reader is not None else [])
        for client in clients:
            try:
                await asyncio.wait_for(client.aclose(), 1.0)
            except Exception as exc:  # noqa: BLE001 - the process is leaving anyway
                log.debug(f"cluster: closing a Redis connection failed: {exc}")

    def _final(self, graceful: bool) -> None:
        self.closed = True
        if self.outbox:
            log.warn(f"cluster: {len(self.outbox)} cluster events posted by this process never reached Redis "
                     "and are lost")
        for task in (self._flusher,):
            if task is not None:
                task.cancel()
        for lease in self.leases.values():
            lease.stop()
        if self.reader is not None:
            self.reader.stop()

    def statistics(self) -> dict[str, Any]:
        from pyngx.runtime import clusterlink, eventbus

        out: dict[str, Any] = {
            "cluster": self.conf.name, "node": self.node, "redis": clusterlink.shown_url(self.conf.url),
            "link": self.link.statistics(), "posted": self.posted, "queued": len(self.outbox),
            "refused": self.refused, "dropped_unique": self.dropped_unique,
            "leases": {name: lease.token for name, lease in self.leases.items() if lease.valid()},
        }
        if self.reader is not None and self.reader.locked:
            out["reader"] = self.reader.statistics()
        else:
            bus = eventbus.current()
            blob = bus.zone.get(STATUS_KEY) if bus is not None else None
            out["reader"] = msgpack.unpackb(blob) if isinstance(blob, bytes) else None
        return out


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.exception("cluster: posting failed", task.exception())  # type: ignore[arg-type]


def _unique_timeout() -> float:
    """How long a unique cluster post drops repeats: the events ``timeout`` of this process."""
    from pyngx.runtime import eventbus

    bus = eventbus.current()
    return bus.settings.timeout if bus is not None else 2.0


# -- this process (its member is the Runtime's ``cluster``) --

def start(conf: ClusterConf, reader_candidate: bool) -> Member:
    """Join the cluster in this process (the process main, after init_worker_by_python)."""
    member = current(conf)
    if reader_candidate:
        member.become_candidate()
    member.start()
    return member


def current(conf: ClusterConf | None = None, reader_candidate: bool = False) -> Member:
    """This process's member, made on first use (a serving process's only: never the master's).

    Raises Error without python_cluster.
    """
    rt = core.RT
    found: Member | None = rt.cluster
    if found is not None and not found.closed:
        return found
    if conf is None:
        config = rt.config
        conf = config.http.cluster if config is not None and config.http is not None else None
    if conf is None:
        raise Error("cluster not configured (python_cluster)")
    if not isinstance(rt, core.Runtime):
        raise Error("cluster: not in this process (only workers, the agent and a single process join)")
    found = rt.cluster = Member(conf, rt.prefix, reader_candidate)
    return found


def member() -> Member | None:
    found: Member | None = core.RT.cluster
    return found


def post(source: str, event: str, data: Any, unique: str | None) -> bool:
    """``events.post(..., cluster=True)``."""
    return current().post(source, event, data, unique)


def statistics() -> dict[str, Any] | None:
    found: Member | None = core.RT.cluster
    return found.statistics() if found is not None else None
