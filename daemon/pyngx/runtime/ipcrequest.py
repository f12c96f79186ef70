"""IPC request/reply: an alert whose handler's ``ipc.reply()`` resolves the sender's await.

Owns the request ids, the futures waiting for replies, and the two internal
alerts that carry them over the ordinary transport (`pyngx.runtime.channel`):

- ``pyngx.ipc.request``: ``<id u64><name length u16><str u8>`` + name + data, sent
  to the peer; the peer runs its user handler of NAME with DATA, as for an alert
  sent with ``ipc.send``, with the request in a context variable;
- ``pyngx.ipc.reply``: ``<id u64><status u8><str u8>`` + data, sent back by the
  first ``ipc.reply()`` of that handler (or at once, status NO_HANDLER, when the
  peer has no handler of NAME).

A request fails when its timeout passes, and when the last connection with the
peer closes before the reply (the peer exited, or one end gave the other up). Knows nothing of argument checks
(`pyngx.ipc` does them).
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
import struct
from dataclasses import dataclass

from pyngx import errors
from pyngx.runtime import channel

REQUEST, REPLY = "pyngx.ipc.request", "pyngx.ipc.reply"
OK, NO_HANDLER = 0, 1
_REQ = struct.Struct("<QHB")
_REP = struct.Struct("<QBB")


@dataclass(slots=True)
class Asked:
    """The request a handler is answering: who asked, under which id, answered yet."""

    pid: int
    id: int
    replied: bool = False


ASKED: contextvars.ContextVar[Asked | None] = contextvars.ContextVar("pyngx_ipc_asked", default=None)
_ids = itertools.count(1)


def _pack(head: struct.Struct, first: int, second: int, data: str | bytes, name: bytes = b"") -> bytes:
    is_str = type(data) is str
    raw = data.encode("utf-8", "surrogatepass") if is_str else data  # type: ignore[union-attr]
    return head.pack(first, second, is_str) + name + raw  # type: ignore[operator]


def _payload(raw: bytes, is_str: int) -> str | bytes:
    return raw.decode("utf-8", "surrogatepass") if is_str else raw


async def request(chan: channel.Channel, pid: int, name: bytes, data: str | bytes, timeout: float | None
                  ) -> str | bytes:
    """Send NAME with DATA to PID over CHAN and wait for its handler's ``ipc.reply``.

    Raises IPCError("no such process") at once for a pid outside the tree,
    IPCError("no handler") when PID has no handler of NAME, IPCError("process
    exited") when PID goes before answering (IPCError("connection closed") when the
    connection went while it lives), pyngx TimeoutError("timeout").
    """
    waiting = chan.asking
    rid = next(_ids)
    future: asyncio.Future[str | bytes] = asyncio.get_running_loop().create_future()
    waiting[rid] = (pid, future)
    try:
        channel.send_internal(pid, REQUEST, _pack(_REQ, rid, len(name), data, name))
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:  # asyncio's, the builtin since 3.11
        raise errors.TimeoutError("timeout") from None
    finally:
        waiting.pop(rid, None)


def reply(data: str | bytes) -> bool:
    """Inside a request's handler, answer it with DATA (once). False where there is nothing to answer."""
    asked = ASKED.get()
    if asked is None or asked.replied:
        return False
    asked.replied = True
    channel.send_internal(asked.pid, REPLY, _pack(_REP, asked.id, OK, data))
    return True


def _on_request(pid: int, raw: str | bytes) -> None:
    if type(raw) is not bytes or len(raw) < _REQ.size:
        return
    rid, nlen, is_str = _REQ.unpack_from(raw)
    name = raw[_REQ.size:_REQ.size + nlen]
    chan = channel.current()
    if chan is None:
        return
    token = ASKED.set(Asked(pid, rid))
    try:
        found = chan.run_handler(name, _payload(raw[_REQ.size + nlen:], is_str))
    finally:
        ASKED.reset(token)
    if not found:
        channel.send_internal(pid, REPLY, _pack(_REP, rid, NO_HANDLER, b""))


def _on_reply(pid: int, raw: str | bytes) -> None:
    if type(raw) is not bytes or len(raw) < _REP.size:
        return
    rid, status, is_str = _REP.unpack_from(raw)
    chan = channel.current()
    entry = chan.asking.get(rid) if chan is not None else None
    if entry is None or entry[0] != pid or entry[1].done():
        return  # late (timed out) or not ours
    if status == OK:
        entry[1].set_result(_payload(raw[_REP.size:], is_str))
    else:
        entry[1].set_exception(errors.IPCError("no handler"))


SETTLE, SETTLE_TRIES = 0.02, 10  # a killed process is a zombie a moment after its sockets close


def _on_lost(pid: int) -> None:
    """No connection with PID is left: its replies cannot come any more."""
    chan = channel.current()
    if chan is not None and any(asked == pid and not future.done() for asked, future in chan.asking.values()):
        _fail(chan, pid, 0)


def _fail(chan: channel.Channel, pid: int, tries: int) -> None:
    """Fail the requests to PID, saying whether it exited (re-checked a few times, as the
    kernel closes a dying process's sockets just before it becomes a zombie)."""
    alive = _alive(pid)
    if alive and tries < SETTLE_TRIES:
        try:
            asyncio.get_running_loop().call_later(SETTLE, _fail, chan, pid, tries + 1)
            return
        except RuntimeError:  # no loop any more (this process is closing): say it now
            pass
    for asked, future in list(chan.asking.values()):
        if asked == pid and not future.done():
            future.set_exception(errors.IPCError("connection closed" if alive else "process exited"))


def _alive(pid: int) -> bool:
    """PID runs (a zombie, exited and not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


channel.receive_internal(REQUEST, _on_request)
channel.receive_internal(REPLY, _on_reply)
channel.on_lost(_on_lost)
