"""IPC transport between the workers and the agent of one master.

Owns this process's socket, its connections, the peer check on accept, the
broadcast targets and the dispatch of arrived alerts to handlers. Knows nothing of argument checking
(`pyngx.ipc` does that) nor of HTTP.

Each process binds one unix stream socket in the abstract namespace,
``\\0pyngx-ipc-<master pid>-<pid>``, right after its loop exists and before
``init_worker_by_python``. A sender connects to the receiver's name once and
keeps the connection; either end may then send on it, so one connection per
pair usually carries both directions. Each connection belongs to exactly one
peer, so the packets of two senders never mix and a stream keeps one sender's
order. Both ends check the other with ``SO_PEERCRED`` against the process
table (`pyngx.runtime.tree`): the acceptor refuses a pid that is not a live
process of this master, the connector refuses a socket bound by any process
but the one it asked for (a squatter on the name).

The wire format and one connection's queue and reader are in
`pyngx.runtime.ipcconn`.

Sending never blocks: a message is appended to the connection's queue and
written on the next loop turn (so a burst leaves in few syscalls); what the
kernel does not take waits for the socket to be writable. The queue is
bounded (``QUEUE_LIMIT``; one message of any size is accepted when the queue
is empty), and a peer that has read nothing for ``SEND_TIMEOUT`` seconds
while data waited is given up: its queue is dropped and ``send`` raises IPCError.

Internal API (for other parts of pyngx, e.g. the events engine's wake-ups):

- ``start(rt)``: bind the socket of a `core.Runtime` (``Runtime.start``
  does, before init_worker); it closes through the runtime's exit hooks.
  ``current()`` is the current runtime's channel while it is open.
- ``send_internal(pid, name, data)``, ``broadcast_internal(name, data, *,
  current=False)`` (every live worker and agent, old generations included
  unless ``current``; this process included): ``data`` is str or bytes.
  Raise IPCError like the public calls; do nothing where there is no
  channel (the master during init_by_python, a plain script).
- ``receive_internal(name, handler)``: ``handler(sender_pid, data)``, called
  on the loop; None removes it. Internal names live apart from user names.
- ``on_lost(fn)``: ``fn(pid)`` when the last connection with PID closes.
- ``statistics() -> dict``: sent, received, dropped, bytes, ... for the
  status endpoint.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pyngx import log
from pyngx.errors import IPCError
from pyngx.runtime import core, ipcconn, phase, repeats, tree
from pyngx.runtime.ipcconn import CONT as CONT
from pyngx.runtime.ipcconn import HEAD as HEAD
from pyngx.runtime.ipcconn import INTERNAL as INTERNAL
from pyngx.runtime.ipcconn import MAX_NAME as MAX_NAME
from pyngx.runtime.ipcconn import MORE as MORE
from pyngx.runtime.ipcconn import PACKET as PACKET
from pyngx.runtime.ipcconn import RECV_SIZE as RECV_SIZE
from pyngx.runtime.ipcconn import STR as STR
from pyngx.runtime.ipcconn import Conn as Conn
from pyngx.runtime.ipcconn import address as address
from pyngx.runtime.ipcconn import encode as encode
from pyngx.runtime.ipcconn import packets as packets

_pack = HEAD.pack
BACKLOG = 128
ADOPT_WAIT = 2.0  # how long a fresh child may be missing from the table

Handler = Callable[[Any], Any]
InternalHandler = Callable[[int, Any], Any]

_internal: dict[bytes, InternalHandler] = {}
_on_lost: list[Callable[[int], None]] = []  # called with a pid when its last connection closes


class Channel:
    """This process's socket, its connections and its counters."""

    def __init__(self, loop: asyncio.AbstractEventLoop, master_pid: int, table: tree.Tree | None) -> None:
        self.loop, self.master, self.pid = loop, master_pid, os.getpid()
        self.table = table  # the process table: whom a broadcast reaches
        self.conns: dict[int, Conn] = {}  # the connection used to send to a pid
        self.every: set[Conn] = set()
        self.parked: set[socket.socket] = set()
        self.local: deque[tuple[bytes, int, Any]] = deque()
        self.local_scheduled = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.waiter: asyncio.Future[None] | None = None  # graceful exit waits for idle
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        self.cache: dict[bool, tuple[int, list[int]]] = {}
        self.sent = self.received = self.dropped = self.refused = 0
        self.closed = False
        self.handlers: dict[bytes, Handler] = {}  # the user's, by alert name (``ipc.receive``)
        # `ipcrequest`'s requests waiting for their reply: id -> (pid asked, its future)
        self.asking: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self.bytes_in = self.bytes_out = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self.listener.bind(address(master_pid, self.pid))
            self.listener.listen(BACKLOG)
        except OSError:
            self.listener.close()
            raise
        loop.add_reader(self.listener.fileno(), self.accept)

    # -- sending --

    def send(self, pid: int, name: bytes, data: str | bytes, flags: int = 0) -> None:
        if pid == self.pid:
            self.send_local(name, flags, data)
        else:
            conn = self.conns.get(pid)
            if conn is None:
                conn = self.connect(pid)
            if type(data) is bytes and len(data) <= 4096:  # the common case, without a call
                conn.queue((_pack(len(name) + len(data), len(name), flags) + name + data,))
            else:
                conn.queue(packets(name, data, flags))
        self.sent += 1

    def broadcast(self, name: bytes, data: str | bytes, flags: int = 0, *, current: bool = True) -> None:
        """To every target; raises the first IPCError after trying them all."""
        frame: tuple[bytes, ...] | list[Any] = ()
        failure: IPCError | None = None
        for pid in self.targets(current):
            try:
                if pid == self.pid:
                    self.send_local(name, flags, data)
                else:
                    conn = self.conns.get(pid) or self.connect(pid)
                    conn.queue(frame or (frame := packets(name, data, flags)))
                self.sent += 1
            except IPCError as exc:
                if str(exc) != "no such process":  # one that just exited is not an error
                    failure = failure or exc
        if failure is not None:
            raise failure

    def send_local(self, name: bytes, flags: int, data: str | bytes) -> None:
        self.local.append((name, flags, data if type(data) in (str, bytes) else bytes(data)))
        if not self.local_scheduled:
            self.local_scheduled = True
            self.loop.call_soon(self.drain_local)

    def drain_local(self) -> None:
        self.local_scheduled = False
        local, pid = self.local, self.pid
        sender_token, phase_token = ipcconn.SENDER.set(pid), phase.set(phase.IPC)
        try:
            for _ in range(len(local)):  # what handlers send to themselves now waits for the next turn
                name, flags, data = local.popleft()
                self.deliver(pid, name, flags, data)
        finally:
            phase.reset(phase_token)
            ipcconn.SENDER.reset(sender_token)
        if self.waiter is not None:
            self.check_idle()

    def targets(self, current: bool) -> list[int]:
        """Pids a broadcast goes to: ready peers and this process."""
        table = self.table
        if table is None:
            return [self.pid]
        version = table.version()
        hit = self.cache.get(current)
        if hit is not None and hit[0] == version:
            return hit[1]
        pids = [p.pid for p in table.peers(current=current) if p.ready and p.pid != self.pid]
        pids.append(self.pid)
        self.cache[current] = (version, pids)
        return pids

    def connect(self, pid: int) -> Conn:
        """The connection to PID, opened now (or dialling, while PID starts)."""
        if not ipcconn.known(pid):
            raise IPCError("no such process")
        conn = Conn(self, self.dial(pid), pid)
        self.conns[pid] = conn
        self.every.add(conn)
        return conn

    def dial(self, pid: int) -> socket.socket | None:
        """A socket connected to PID's name and checked; None when nobody listens there yet."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(address(self.master, pid))
            owner = ipcconn.peer(sock)[0]
        except (BlockingIOError, InterruptedError):
            sock.close()
            raise IPCError("busy") from None  # its backlog is full: it accepts nothing
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None
        except OSError:
            sock.close()
            raise IPCError("no such process") from None
        if owner != pid:
            sock.close()
            log.alert(f"ipc: the socket of process {pid} is bound by process {owner}, refused")
            raise IPCError("no such process")
        return sock

    # -- receiving --

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error(f"ipc: accept() failed ({exc.errno}: {exc.strerror})")
                return
            sock.setblocking(False)
            pid, uid, _ = ipcconn.peer(sock)
            if ipcconn.known(pid):
                self.adopt(sock, pid)
            elif ipcconn.parent(pid) == self.master:
                # forked a moment ago: the master has not written it in the table yet
                self.parked.add(sock)
                self.loop.call_later(0.005, self.recheck, sock, pid, time.monotonic() + ADOPT_WAIT)
            else:
                self.refuse(sock, pid, uid)

    def recheck(self, sock: socket.socket, pid: int, deadline: float) -> None:
        if sock not in self.parked:
            return
        if ipcconn.known(pid):
            self.parked.discard(sock)
            self.adopt(sock, pid)
        elif time.monotonic() < deadline and ipcconn.parent(pid) == self.master:
            self.loop.call_later(0.02, self.recheck, sock, pid, deadline)
        else:
            self.parked.discard(sock)
            self.refuse(sock, pid, -1)

    def adopt(self, sock: socket.socket, pid: int) -> None:
        conn = Conn(self, sock, pid)
        self.every.add(conn)
        self.conns.setdefault(pid, conn)  # answers go back on it unless we have our own

    def refuse(self, sock: socket.socket, pid: int, uid: int) -> None:
        self.refused += 1
        who = f"process {pid}" + (f" (uid {uid})" if uid >= 0 else "")
        log.warn(f"ipc: refused a connection from {who}: not a process of this master")
        sock.close()

    def deliver(self, pid: int, name: bytes, flags: int, data: str | bytes) -> None:
        """Run the handler of one arrived alert (the caller has set the sender and the phase)."""
        self.received += 1
        if flags & INTERNAL:
            ifn = _internal.get(name)
            if ifn is None:
                self.dropped += 1
                return
            try:
                ifn(pid, data)
            except Exception as exc:  # noqa: BLE001 - never let a handler stop the reader
                repeats.exception(f'ipc: internal handler "{name.decode(errors="replace")}" failed', exc)
            return
        if not self.run_handler(name, data):
            self.dropped += 1
            if log.enabled(log.DEBUG):
                log.debug(f'ipc: alert "{name.decode(errors="replace")}" from {pid} has no handler, dropped')

    def run_handler(self, name: bytes, data: str | bytes) -> bool:
        """Run the user's handler of NAME (in the caller's context); False when there is none."""
        fn = self.handlers.get(name)
        if fn is None:
            return False
        try:
            result = fn(data)
            if result is not None and inspect.isawaitable(result):
                self.spawn(result, name)  # the task copies this context: sender and phase
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - the user's handler, whatever it raised
            repeats.exception(f'ipc handler "{name.decode(errors="replace")}" failed', exc)
        return True

    def spawn(self, awaitable: Any, name: bytes) -> None:
        task = asyncio.ensure_future(awaitable, loop=self.loop)
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                repeats.exception(f'ipc handler "{name.decode(errors="replace")}" failed', t.exception())  # type: ignore[arg-type]

        task.add_done_callback(done)

    # -- ending --

    def forget(self, conn: Conn, lost: bool) -> None:
        self.every.discard(conn)
        if self.conns.get(conn.pid) is conn:
            del self.conns[conn.pid]
            for other in self.every:  # a connection the peer opened can carry our answers
                if other.pid == conn.pid:
                    self.conns[conn.pid] = other
                    break
        if lost:
            self.dropped += 1
        if conn.pid not in self.conns:
            for fn in _on_lost:  # nothing more can come from that process
                fn(conn.pid)
        if self.waiter is not None:
            self.check_idle()

    def busy(self) -> bool:
        return bool(self.tasks or self.local or any(conn.queued() for conn in self.every))

    def check_idle(self) -> None:
        if self.waiter is not None and not self.waiter.done() and not self.busy():
            self.waiter.set_result(None)

    async def wait_idle(self) -> None:
        """Graceful exit: let async handlers finish and queued alerts leave.

        Bounded by the caller (worker_shutdown_timeout); a peer that reads
        nothing for ipcconn.SEND_TIMEOUT is given up sooner.
        """
        while self.busy():
            if self.tasks:
                await asyncio.wait(list(self.tasks))
                continue
            self.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, ipcconn.SEND_TIMEOUT)
            except asyncio.TimeoutError:
                now = time.monotonic()
                for conn in list(self.every):
                    if conn.queued() and now - conn.progress > ipcconn.SEND_TIMEOUT:
                        conn.give_up()
            finally:
                self.waiter = None

    def close(self, graceful: bool) -> None:
        self.closed = True
        if graceful:
            for conn in list(self.every):
                if conn.queued() and not conn.closed and conn.sock is not None:
                    conn.write()  # one last try, without waiting
        for conn in list(self.every):
            conn.close()
        for sock in self.parked:
            sock.close()
        self.parked.clear()
        for task in self.tasks:
            task.cancel()
        try:
            self.loop.remove_reader(self.listener.fileno())
        except Exception:  # noqa: BLE001 - the loop may be closing already
            pass
        self.listener.close()

    def statistics(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received, "dropped": self.dropped,
                "bytes": self.bytes_in + self.bytes_out, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "refused": self.refused, "peers": len(self.every),
                "queued": sum(c.queued() for c in self.every)}


# -- the module API --

def start(rt: Any) -> Channel:
    """Bind the socket of runtime RT (a `core.Runtime`); its exit hooks close it."""
    chan = Channel(rt.loop, rt.master_pid or os.getpid(), rt.tree)
    rt.exits.on_wait(chan.wait_idle)
    rt.exits.on_final(chan.close)
    return chan


def current() -> Channel | None:
    """This process's open channel, or None where there is none (the master, a script)."""
    chan = core.RT.channel
    return chan if chan is not None and not chan.closed else None


def _forget_after_fork() -> None:
    # a process forked from a serving one never uses its parent's channel (its sockets are the parent's)
    rt = core.RT
    if isinstance(rt, core.Runtime):
        rt.channel = None


os.register_at_fork(after_in_child=_forget_after_fork)


def sender() -> int | None:
    """The pid whose alert the running handler is handling, else None."""
    return ipcconn.SENDER.get()


def set_handler(chan: Channel, name: bytes, fn: Handler | None) -> None:
    if fn is None:
        chan.handlers.pop(name, None)
    else:
        chan.handlers[name] = fn


def send_internal(pid: int, name: str, data: str | bytes) -> None:
    """Send a pyngx-internal alert to PID (never seen by user handlers).

    Does nothing where there is no channel (the master, a script).
    """
    chan = core.RT.channel
    if chan is not None and not chan.closed:
        chan.send(pid, name.encode(), data, INTERNAL)


def broadcast_internal(name: str, data: str | bytes, *, current: bool = False) -> None:
    """Send a pyngx-internal alert to every live worker and agent and to this process.

    Does nothing where there is no channel (the master, a script).
    """
    chan = core.RT.channel
    if chan is not None and not chan.closed:
        chan.broadcast(name.encode(), data, INTERNAL, current=current)


def receive_internal(name: str, handler: InternalHandler | None) -> None:
    """Set (or with None remove) the internal handler of NAME: ``handler(sender_pid, data)``."""
    key = name.encode()
    if handler is None:
        _internal.pop(key, None)
    else:
        _internal[key] = handler


def on_lost(fn: Callable[[int], None]) -> None:
    """Call ``fn(pid)`` whenever the last connection with PID closes (it exited, or gave up)."""
    _on_lost.append(fn)


def statistics() -> dict[str, int]:
    """Counters of this process's channel, for the status endpoint."""
    chan = current()
    if chan is None:
        return {"sent": 0, "received": 0, "dropped": 0, "bytes": 0, "bytes_in": 0, "bytes_out": 0,
                "refused": 0, "peers": 0, "queued": 0}
    return chan.statistics()
