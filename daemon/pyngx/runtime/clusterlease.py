"""The lease behind a cluster job (``ngx.timer.every(..., unique=NAME, scope="cluster")``).

One key per job in Redis holds ``HOLDER TOKEN`` with a time to live. The
process that holds the job's tree lock on its node (`pyngx.runtime.timers`)
keeps a `Lease`: a task takes the key when it is free (the fencing token is
then the job's counter, incremented: every new holder gets a larger one),
renews it every third of the lease time while it holds it, and otherwise
sleeps until the other holder's time runs out.

The rule that keeps two nodes from running the job at once: this process
counts its lease as valid only until the time it *sent* its last successful
renewal plus 90% of the lease time. Redis started the key's time no earlier
than that, so the local view always ends first; a holder cut off from Redis
stops running the job before any other node can take the key. A run already
going is not stopped: a job whose runs may outlast the lease should pass
``ngx.timer.fencing_token(NAME)`` to the system it writes to.
"""
from __future__ import annotations

import asyncio
import os
import secrets
from typing import TYPE_CHECKING

from pyngx import log
from pyngx.runtime import clusterlink

if TYPE_CHECKING:
    from pyngx.runtime.cluster import Member

SAFETY = 0.9  # the share of the lease time this process trusts its lease for


class Lease:
    """This process's claim on one cluster job."""

    def __init__(self, member: Member, name: str) -> None:
        self.member = member
        self.name = name
        self.holder = f"{member.node}:{os.getpid()}:{secrets.token_hex(4)}"
        self.ttl = member.conf.lease
        self.token: int | None = None
        self.valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._giving: asyncio.Task[None] | None = None
        self.loop = member.loop

    def valid(self) -> bool:
        """True while this process may start a run of the job."""
        return self.token is not None and self.loop.time() < self.valid_until

    def start(self) -> None:
        """Begin competing for the lease (this process holds the job's tree lock)."""
        if self._task is None:
            self._task = self.loop.create_task(self._keep())

    def stop(self) -> None:
        """Stop competing, and give the key back when this process holds it (another node
        then takes over without waiting for it to run out)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.token is not None and not self.loop.is_closed():
            self._giving = self.loop.create_task(self._give_back())
        self._lose(None)

    async def release(self) -> None:
        """`stop()`, and wait (briefly) until the key is given back."""
        self.stop()
        if self._giving is not None:
            await asyncio.wait([self._giving], timeout=1.0)

    async def _give_back(self) -> None:
        try:
            await clusterlink.evalsha_many(self.member.client, [("release", [self.member.keys.lease(self.name)],
                                                                 [self.holder])])
        except clusterlink.TROUBLE as exc:
            log.debug(f'cluster: could not give back the lease of "{self.name}": {exc}')

    async def _keep(self) -> None:
        keys, link = self.member.keys, self.member.link
        ttl_ms = int(self.ttl * 1000)
        while True:
            sent = self.loop.time()
            try:
                call = ("lease", [keys.lease(self.name), keys.fence(self.name)], [self.holder, ttl_ms])
                [answer] = await clusterlink.evalsha_many(self.member.client, [call])
            except clusterlink.TROUBLE as exc:
                link.failed(exc)
                if self.token is not None and self.loop.time() >= self.valid_until:
                    self._lose("Redis unreachable")
                await asyncio.sleep(min(link.backoff(), self.ttl / 3))
                continue
            link.ok()
            if answer > 0:
                if self.token != answer:
                    log.notice(f'timer "{self.name}": this node runs the cluster job now (fencing token {answer})')
                self.token, self.valid_until = int(answer), sent + self.ttl * SAFETY
                await asyncio.sleep(self.ttl / 3)
            else:
                self._lose("another node holds it")
                await asyncio.sleep(min(-answer / 1000, self.ttl) + 0.005)

    def _lose(self, why: str | None) -> None:
        if self.token is not None and why is not None:
            log.warn(f'timer "{self.name}": lost the cluster lease ({why}); the job stops running here')
        self.token = None
        self.valid_until = 0.0
