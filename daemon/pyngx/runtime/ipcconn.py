"""One IPC connection: the wire format, the write queue, the packet reader, peer checks.

Owns the bytes on one unix stream socket to one peer process. Knows nothing
of handlers' names or of who is in a broadcast: `pyngx.runtime.channel` owns
the connections and hands each arrived message to its ``deliver``.

Wire format: packets ``<u32 body length><u16 name length><u8 flags>`` then
the name and at most ``PACKET`` bytes of data. A longer message goes out as a
first packet with ``MORE`` and continuation packets (``CONT``, no name), and is
joined again on arrival. ``STR`` says the data was a ``str`` (UTF-8,
surrogates kept); ``INTERNAL`` marks pyngx's own alerts.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from pyngx import log
from pyngx.errors import IPCError
from pyngx.runtime import core, phase

if TYPE_CHECKING:
    from pyngx.runtime.channel import Channel

HEAD = struct.Struct("<IHB")  # body length, name length, flags
STR, MORE, CONT, INTERNAL = 1, 2, 4, 8
PACKET = 65536  # data bytes per packet
MAX_NAME = 65535
QUEUE_LIMIT = 64 * 1024 * 1024  # bytes waiting for one peer
SEND_TIMEOUT = 5.0  # seconds a peer may read nothing while data waits for it
STUCK_CHECK = 262144  # queued bytes from which a send checks SEND_TIMEOUT
RECV_SIZE = 262144
DIAL_WAIT = 5.0  # how long a process in the table may take to listen
DIAL_EVERY = 0.01
_CRED = struct.Struct("3i")

# the pid whose alert is being handled (ipc.sender); set by the reader around its handlers
SENDER: contextvars.ContextVar[int | None] = contextvars.ContextVar("pyngx_ipc_sender", default=None)


def address(master_pid: int, pid: int) -> str:
    """The abstract socket name of PID under MASTER_PID."""
    return f"\0pyngx-ipc-{master_pid}-{pid}"


def packets(name: bytes, data: str | bytes, flags: int) -> tuple[bytes, ...] | list[Any]:
    """The packets of one message, as buffers to append to a queue (no copy of a big payload)."""
    if type(data) is str:
        payload = data.encode("utf-8", "surrogatepass")
        flags |= STR
    else:
        payload = bytes(data)
    if len(payload) <= 4096:
        return (HEAD.pack(len(name) + len(payload), len(name), flags) + name + payload,)
    if len(payload) <= PACKET:  # appended as it is: no joined copy of a big payload
        return (HEAD.pack(len(name) + len(payload), len(name), flags) + name, payload)
    view = memoryview(payload)
    out: list[Any] = [HEAD.pack(len(name) + PACKET, len(name), flags | MORE), name, view[:PACKET]]
    for at in range(PACKET, len(payload), PACKET):
        piece = view[at:at + PACKET]
        more = MORE if at + PACKET < len(payload) else 0
        out += (HEAD.pack(len(piece), 0, (flags & (STR | INTERNAL)) | CONT | more), piece)
    return out


def encode(name: bytes, data: str | bytes, flags: int) -> bytes:
    """The packets of one message, joined (the bytes on the wire)."""
    return b"".join(packets(name, data, flags))


class Conn:
    """One connection to one peer: a write queue and a packet reader."""

    __slots__ = ("chan", "sock", "fd", "pid", "out", "head", "writing", "scheduled", "progress", "rest", "part",
                 "closed", "dialing")

    def __init__(self, chan: Channel, sock: socket.socket | None, pid: int) -> None:
        self.chan, self.sock, self.fd, self.pid = chan, sock, -1, pid
        # New messages are appended to `out`; `head` is the buffer being written. Swapping
        # them (never deleting from the front of one growing buffer) copies each byte once.
        self.out = bytearray()
        self.head: memoryview | None = None
        self.writing = self.scheduled = self.closed = False
        self.progress = 0.0
        self.rest = b""
        self.part: tuple[bytes, int, list[bytes]] | None = None  # a message still arriving
        self.dialing: asyncio.TimerHandle | None = None
        if sock is not None:
            self.attach(sock)
        else:  # in the table but not listening yet (forked a moment ago): queue and dial again
            self.dialing = chan.loop.call_later(DIAL_EVERY, self.redial, time.monotonic() + DIAL_WAIT)

    def attach(self, sock: socket.socket) -> None:
        self.sock, self.fd = sock, sock.fileno()
        self.chan.loop.add_reader(self.fd, self.on_readable)
        if self.queued() and not self.scheduled:
            self.flush()

    def redial(self, deadline: float) -> None:
        self.dialing = None
        try:
            sock = self.chan.dial(self.pid)
        except IPCError:
            sock = None
            deadline = 0.0
        if sock is not None:
            self.attach(sock)
        elif time.monotonic() < deadline and known(self.pid):
            self.dialing = self.chan.loop.call_later(DIAL_EVERY, self.redial, deadline)
        else:
            # expected while the tree stops or reloads (peers close their sockets as they
            # exit): a warning only for a live peer of the current generation
            log.log(log.WARN if live_current(self.pid) else log.INFO,
                    f"ipc: process {self.pid} is not listening, dropped {self.queued()} bytes queued for it")
            self.close()

    # -- writing --

    def queue(self, pieces: tuple[bytes, ...] | list[Any]) -> None:
        """Append one message's packets; raises IPCError when the peer does not keep up."""
        queued = len(self.out) + (len(self.head) if self.head is not None else 0)
        if queued:
            # a queue the kernel could not take at once: is the peer still reading?
            if queued > STUCK_CHECK and time.monotonic() - self.progress > SEND_TIMEOUT:
                self.check_stuck()
            if queued + (len(pieces[0]) if len(pieces) == 1 else sum(map(len, pieces))) > QUEUE_LIMIT:
                raise IPCError("queue full")
        else:
            self.progress = time.monotonic()
        out = self.out
        for piece in pieces:
            out += piece
        if not self.scheduled and not self.writing:
            self.scheduled = True
            self.chan.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if not self.writing and not self.closed and self.sock is not None:
            self.write()

    def queued(self) -> int:
        return len(self.out) + (len(self.head) if self.head is not None else 0)

    def write(self) -> None:
        """Write what the kernel takes now; wait for writability for the rest."""
        while True:
            head = self.head
            if head is None:
                if not self.out:
                    break
                head = memoryview(self.out)
                self.out = bytearray()
            try:
                n = self.sock.send(head)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.close()
                return
            if n:
                self.chan.bytes_out += n
                self.progress = time.monotonic()
            if n == len(head):
                self.head = None
                continue
            self.head = head[n:]
            break
        if self.head is not None:
            if not self.writing:
                self.writing = True
                self.chan.loop.add_writer(self.fd, self.write)
        else:
            if self.writing:
                self.writing = False
                self.chan.loop.remove_writer(self.fd)
            if self.chan.waiter is not None:
                self.chan.check_idle()

    def check_stuck(self) -> None:
        """Raise IPCError when the peer has read nothing for SEND_TIMEOUT."""
        if self.sock is not None:
            self.write()  # our own loop may have been the busy one: try before judging
        if self.closed:
            raise IPCError("no such process")
        if self.queued() and time.monotonic() - self.progress > SEND_TIMEOUT:
            self.give_up()
            raise IPCError("timeout")

    def give_up(self) -> None:
        log.warn(f"ipc: process {self.pid} has read nothing for {SEND_TIMEOUT:g}s, "
                 f"dropped {self.queued()} bytes queued for it")
        self.close()

    # -- reading --

    def on_readable(self) -> None:
        chan = self.chan
        try:
            # into one reused buffer: recv(n) would allocate n fresh bytes per call, several times slower
            n = self.sock.recv_into(chan.rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if not n:
            self.close()
            return
        data = chan.rview[:n].tobytes()
        self.chan.bytes_in += len(data)
        if self.rest:
            data = self.rest + data
        # one sender per connection: its pid and the phase are set once for the whole read
        sender_token, phase_token = SENDER.set(self.pid), phase.set(phase.IPC)
        try:
            self.parse(data)
        finally:
            phase.reset(phase_token)
            SENDER.reset(sender_token)

    def parse(self, data: bytes) -> None:
        """Deliver every whole message in DATA; keep the rest for the next read."""
        pos, end, size = 0, len(data), HEAD.size
        unpack, deliver, pid = HEAD.unpack_from, self.chan.deliver, self.pid
        longest, split = PACKET + MAX_NAME, MORE | CONT
        while end - pos >= size:
            blen, nlen, flags = unpack(data, pos)
            if blen > longest or nlen > blen:
                return self.violation(f"a malformed packet ({blen} bytes, name {nlen})")
            stop = pos + size + blen
            if stop > end:
                break
            start = pos + size + nlen
            if flags & split:
                self.piece(data[pos + size:start], data[start:stop], flags)
            elif flags & STR:
                deliver(pid, data[pos + size:start], flags, data[start:stop].decode("utf-8", "surrogatepass"))
            else:
                deliver(pid, data[pos + size:start], flags, data[start:stop])
            if self.closed:
                return
            pos = stop
        self.rest = data[pos:] if pos < end else b""

    def piece(self, name: bytes, payload: bytes, flags: int) -> None:
        """One packet of a message split in several."""
        if not flags & CONT:
            self.part = (name, flags, [payload])
            return
        if self.part is None:
            self.violation("a continuation packet with no message")
            return
        self.part[2].append(payload)
        if not flags & MORE:
            name, first, parts = self.part
            self.part = None
            whole = b"".join(parts)
            self.chan.deliver(self.pid, name, first, whole.decode("utf-8", "surrogatepass") if first & STR else whole)

    def violation(self, what: str) -> None:
        log.error(f"ipc: process {self.pid} sent {what}, connection closed")
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.dialing is not None:
            self.dialing.cancel()
        if self.sock is not None:
            loop = self.chan.loop
            try:
                loop.remove_reader(self.fd)
                if self.writing:
                    loop.remove_writer(self.fd)
            except Exception:  # noqa: BLE001 - the loop may be closing already
                pass
            self.sock.close()
        lost = self.queued() > 0 or self.part is not None
        self.out = bytearray()
        self.head = None
        self.chan.forget(self, lost)


def peer(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end, from the kernel (SO_PEERCRED)."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def known(pid: int) -> bool:
    if pid == os.getpid():
        return True
    table = core.RT.tree
    return table is not None and pid > 0 and table.has(pid)


def live_current(pid: int) -> bool:
    """PID is listed, of the current generation, and this process is not exiting."""
    table = core.RT.tree
    if core.RT.exiting or table is None:
        return False
    return any(peer.pid == pid for peer in table.peers(current=True))


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
