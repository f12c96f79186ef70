"""One process's link to the cluster's Redis: clients, back-off, Lua scripts, key names.

Owns how a process talks to Redis through the ``redis`` package's asyncio
client (with hiredis when installed): clients made on demand with bounded
timeouts and no hidden retries (a failed call fails at once and the caller
backs off), the link's state for the status page, the key layout and the Lua
scripts that make a post and a lease one step each. Knows nothing of events
or timers. Imported only by `pyngx.runtime.cluster`, and only in a process
whose config has ``python_cluster``.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import urllib.parse
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from pyngx import log

# What a call to Redis may raise when the link is down or slow.
TROUBLE = (RedisError, OSError, asyncio.TimeoutError)
CALL_TIMEOUT = 2.0  # seconds: a call to a silent Redis fails after this
CONNECT_TIMEOUT = 1.0
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0

# A batch of posts, in order: drop a repeat of a unique event, else number it and append it.
# One script call per batch, not per event: the round trip and the client's work per command
# were the cost. (The unique markers' names are built here, under the cluster's hash tag.)
# KEYS: stream, seq; ARGV: maxlen, unique ttl ms, unique marker prefix, then (payload, unique or "")...
# Returns each post's number, 0 for a dropped repeat.
POST = """
local out = {}
for i = 4, #ARGV, 2 do
  local u = ARGV[i + 1]
  if u ~= '' and not redis.call('SET', ARGV[3] .. u, '1', 'NX', 'PX', ARGV[2]) then
    out[#out + 1] = 0
  else
    local n = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', n, 'p', ARGV[i])
    out[#out + 1] = n
  end
end
return out
"""

# Take or renew a lease. Returns the fencing token (> 0) when HOLDER holds it
# now, else minus the milliseconds the other holder keeps it.
# KEYS: lease, fence counter; ARGV: holder, ttl ms
LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  local t = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. t, 'PX', ARGV[2])
  return t
end
local sp = string.find(cur, ' ', 1, true)
if sp and string.sub(cur, 1, sp - 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(cur, sp + 1))
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return -left
"""

# Give a lease back, only when HOLDER still holds it. KEYS: lease; ARGV: holder
RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Claim a unique event for NODE; 1 when NODE holds the claim (again, after reading the event
# twice), else 0. KEYS: claim; ARGV: node, ttl seconds
CLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if cur == ARGV[1] then return 1 end
return 0
"""

SCRIPTS = {"post": POST, "lease": LEASE, "release": RELEASE, "claim": CLAIM}
SHA = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in SCRIPTS.items()}


class Keys:
    """Every key of cluster NAME starts with ``pyngx:{NAME}:`` (one hash slot)."""

    __slots__ = ("base", "stream", "seq", "nodes")

    def __init__(self, name: str) -> None:
        self.base = f"pyngx:{{{name}}}:"
        self.stream = self.base + "events"
        self.seq = self.base + "seq"
        self.nodes = self.base + "nodes"

    def unique(self, unique: str) -> str:
        return f"{self.base}u:{unique}"

    def claim(self, entry_id: str) -> str:
        return f"{self.base}claim:{entry_id}"

    def lease(self, name: str) -> str:
        return f"{self.base}lease:{name}"

    def fence(self, name: str) -> str:
        return f"{self.base}fence:{name}"

    def node(self, node: str) -> str:
        return f"{self.base}node:{node}"


def shown_url(url: str) -> str:
    """URL without its password, for logs and the status page."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def make_client(url: str, read_timeout: float = CALL_TIMEOUT, *, single: bool = False) -> aioredis.Redis:
    """A client that fails fast: bounded connect and read times, no retries of its own."""
    return aioredis.Redis.from_url(url, socket_timeout=read_timeout, socket_connect_timeout=CONNECT_TIMEOUT,
                                   retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                                   single_connection_client=single, health_check_interval=0)


class Link:
    """The state of one process's connection(s) to Redis, as the status page shows it.

    ``ok()`` after a call that worked, ``failed(exc)`` after one that did not;
    ``backoff()`` is the pause before the next try: it doubles from 50 ms to
    2 s, with jitter, and starts over once a call works.
    """

    def __init__(self, url: str, what: str) -> None:
        self.url = url
        self.what = what
        self.connected = False
        self.ever_connected = False
        self.reconnects = 0
        self.failures = 0
        self.last_error = ""
        self._delay = 0.0

    def ok(self) -> None:
        if not self.connected:
            self.connected = True
            if self.ever_connected:
                self.reconnects += 1
                log.notice(f"cluster: {self.what} reconnected to Redis at {shown_url(self.url)}")
            self.ever_connected = True
        self._delay = 0.0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.connected or self.failures == 1:
            log.warn(f"cluster: {self.what} cannot reach Redis at {shown_url(self.url)}: {self.last_error}")
        self.connected = False

    def backoff(self) -> float:
        self._delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._delay * 2))
        return self._delay * random.uniform(0.75, 1.25)

    def statistics(self) -> dict[str, Any]:
        return {"connected": self.connected, "reconnects": self.reconnects, "failures": self.failures,
                "last_error": self.last_error}


async def evalsha_many(client: aioredis.Redis, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run scripts (name, keys, args) in one pipeline; load them first when Redis lost them.

    Redis's script cache is all or nothing, so after NOSCRIPT no call of the
    batch ran: loading the scripts and sending the batch again runs each once.
    """
    for attempt in (0, 1):
        pipe = client.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(SHA[name], len(keys), *keys, *args)
        try:
            return await pipe.execute()  # type: ignore[no-any-return]
        except NoScriptError:
            if attempt:
                raise
            for text in SCRIPTS.values():
                await client.script_load(text)
    raise AssertionError("unreachable")  # pragma: no cover
