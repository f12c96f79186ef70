"""``from pyngx import ipc``: named alerts between workers and the agent (after slact's ngx.ipc).

Thin: checks the phase and the arguments, then hands over to
`pyngx.runtime.channel`, which owns the sockets and the handlers.

    ipc.receive("hello", lambda data: ipc.reply("hi", data))
    ipc.send(pid, "hello", b"...")      # one worker or the agent, itself included
    ipc.broadcast("hello", "...")       # every worker and the agent, sender included
    answer = await ipc.request(pid, "hello", "...", timeout=1)   # its handler's ipc.reply
"""
from __future__ import annotations

import os

from collections.abc import Callable, Mapping
from typing import Any

from pyngx.errors import WrongContextError
from pyngx.runtime import channel, ipcrequest, phase
from pyngx.runtime import core as _core

__all__ = ["send", "broadcast", "request", "receive", "reply", "sender", "get_other_worker_pids"]  # noqa: F822 - sender: module __getattr__

_MISSING: Any = object()
_NAMES: dict[str, bytes] = {}  # checked names, encoded (a program uses a handful)


def _name(name: object, api: str) -> bytes:
    if type(name) is str:
        raw = _NAMES.get(name)
        if raw is not None:
            return raw
    else:
        raise TypeError(f"{api}: name must be str, not {type(name).__name__}")
    raw = name.encode("utf-8", "surrogatepass")
    if not 0 < len(raw) <= channel.MAX_NAME:
        raise ValueError(f"{api}: name must be 1 to {channel.MAX_NAME} bytes long")
    if len(_NAMES) >= 4096:
        _NAMES.clear()
    _NAMES[name] = raw
    return raw


def _data(data: object, api: str) -> str | bytes:
    kind = type(data)
    if kind is str or kind is bytes:
        return data  # type: ignore[return-value]
    if isinstance(data, (str, bytes)):  # a subclass: send the plain value
        return str(data) if isinstance(data, str) else bytes(data)
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{api}: data must be str or bytes, not {kind.__name__}")


def _channel(api: str) -> channel.Channel:
    chan = channel.current()
    if chan is None:
        phase.forbid(phase.INIT, api=api)  # there is no channel where init_by_python runs
        raise WrongContextError(f"{api}: API disabled in the context of this process "
                                "(allowed in a worker, the privileged agent or a single process)")
    return chan


def send(pid: int, name: str, data: str | bytes) -> None:
    """Send alert NAME with DATA to the worker or agent PID (this process included).

    Raises IPCError("no such process") for any other pid, IPCError("queue full")
    or IPCError("timeout") when PID does not read what was sent to it.
    """
    chan = _core.RT.channel
    if chan is None or chan.closed:
        chan = _channel("ipc.send")
    if type(pid) is not int:
        raise TypeError(f"ipc.send: pid must be int, not {type(pid).__name__}")
    if type(data) is not bytes and type(data) is not str:
        data = _data(data, "ipc.send")
    chan.send(pid, _NAMES.get(name) or _name(name, "ipc.send"), data)


def broadcast(name: str, data: str | bytes) -> None:
    """Send alert NAME with DATA to every worker and the agent of the current generation, this process included."""
    chan = _channel("ipc.broadcast")
    chan.broadcast(_name(name, "ipc.broadcast"), _data(data, "ipc.broadcast"))


async def request(pid: int, name: str, data: str | bytes, *, timeout: float | None = 5.0) -> str | bytes:
    """Send alert NAME with DATA to PID and wait for its handler's ``ipc.reply(...)``.

    Returns the data of the handler's first reply (str or bytes, as sent). The
    handler is the one ``ipc.receive`` set for NAME in PID, as for ``ipc.send``.
    Raises IPCError("no such process") for a pid outside the tree,
    IPCError("no handler") when PID has no handler of NAME, IPCError("process
    exited") when PID exits before replying, pyngx ``TimeoutError("timeout")``
    after TIMEOUT seconds (None: no limit).
    """
    chan = _channel("ipc.request")
    if type(pid) is not int:
        raise TypeError(f"ipc.request: pid must be int, not {type(pid).__name__}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"ipc.request: timeout must be a number > 0 or None, not {timeout!r}")
    return await ipcrequest.request(chan, pid, _name(name, "ipc.request"), _data(data, "ipc.request"), timeout)


def receive(name: str | Mapping[str, Callable[[Any], Any] | None], handler: Callable[[Any], Any] | None = _MISSING) -> None:
    """Set the handler of alert NAME (``handler(data)``, may be async); None removes it.

    ``receive({name: handler, ...})`` sets several at once.
    """
    chan = _channel("ipc.receive")  # not in init_by_python: handlers live in a process's channel
    if isinstance(name, Mapping):
        if handler is not _MISSING:
            raise TypeError("ipc.receive: give a table of handlers or a name and a handler, not both")
        table = [(_name(k, "ipc.receive"), _handler(fn)) for k, fn in name.items()]
    else:
        if handler is _MISSING:
            raise TypeError("ipc.receive: missing the handler (None removes one)")
        table = [(_name(name, "ipc.receive"), _handler(handler))]
    for key, fn in table:  # all checked first: a bad entry changes nothing
        channel.set_handler(chan, key, fn)


def _handler(fn: object) -> Callable[[Any], Any] | None:
    if fn is not None and not callable(fn):
        raise TypeError(f"ipc.receive: handler must be callable or None, not {type(fn).__name__}")
    return fn  # type: ignore[return-value]


def reply(name: str, data: str | bytes) -> None:
    """Inside an IPC handler: send alert NAME with DATA back to the sender.

    When the alert came from ``ipc.request``, the first reply resolves that
    request instead (NAME is checked, and not sent); later ones are alerts.
    """
    pid = channel.sender()
    if pid is None or phase.current() != phase.IPC:
        raise WrongContextError(f"ipc.reply: API disabled in the context of {phase.current() or 'this process'} "
                                "(allowed in an ipc handler)")
    chan = _channel("ipc.reply")
    key, value = _name(name, "ipc.reply"), _data(data, "ipc.reply")
    if not ipcrequest.reply(value):
        chan.send(pid, key, value)


def get_other_worker_pids() -> list[int]:
    """The pids of this generation's other workers (not this process, not the agent)."""
    from pyngx import worker

    me = os.getpid()
    return [pid for pid in worker.pids() if pid != me]


def __getattr__(attr: str) -> Any:
    # ipc.sender reads the running handler's sender (None outside a handler)
    if attr == "sender":
        return channel.sender()
    raise AttributeError(f"module 'pyngx.ipc' has no attribute {attr!r}")
