"""The IPC transport between real forked processes over real sockets.

The test process plays the master: it owns the process table and forks the
"workers"; each one sets up its channel, registers its handlers, marks itself
ready, waits for the others, runs its part and pickles a result back.
"""
from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import support
from pyngx import ipc
from pyngx.errors import IPCError
from pyngx.runtime import channel, core, ipcconn, state, tree
from pyngx.runtime import loop as loops

Body = Callable[[int, list[int]], Awaitable[Any]]
Init = Callable[[int], None]


def run_tree(n: int, body: Body, init: Init | None = None, *, timeout: float = 30.0,
             extra_pids: tuple[int, ...] = ()) -> list[Any]:
    """Fork N processes with a channel each; returns what BODY(i, pids) returned in each."""
    table = tree.Tree()
    table.set_generation(1, os.getpid())
    for pid in extra_pids:
        table.add(pid, state.WORKER, 99, 1)
    reads: list[int] = []
    pids: list[int] = []
    try:
        for i in range(n):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os.close(r)
                _child(i, n, table, body, init, w, timeout)
            os.close(w)
            table.add(pid, state.WORKER, i, 1)
            reads.append(r)
            pids.append(pid)
        outs = _collect(reads, timeout + 10)
    finally:
        for r in reads:
            os.close(r)
        _reap(pids)
    results = []
    for kind, value in outs:
        assert kind == "ok", value
        results.append(value)
    return results


def _collect(reads: list[int], timeout: float) -> list[tuple[str, Any]]:
    bufs: dict[int, list[bytes]] = {r: [] for r in reads}
    open_ = set(reads)
    deadline = time.monotonic() + timeout
    while open_:
        left = deadline - time.monotonic()
        assert left > 0, "a child did not finish"
        ready, _, _ = select.select(list(open_), [], [], left)
        for r in ready:
            chunk = os.read(r, 1 << 20)
            if chunk:
                bufs[r].append(chunk)
            else:
                open_.discard(r)
    return [pickle.loads(b"".join(bufs[r])) if bufs[r] else ("err", "child died") for r in reads]


def _reap(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    for pid in pids:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)


def _child(i: int, n: int, table: tree.Tree, body: Body, init: Init | None, w: int,
           timeout: float) -> None:  # pragma: no cover - runs in the child
    try:
        loop = loops.new_loop()
        rt = core.Runtime(None, state.WORKER, loop, master_pid=os.getppid(), table=table)
        core.install(rt)

        async def main() -> Any:
            rt.channel = channel.start(rt)
            if init is not None:
                init(i)
            while not table.has(os.getpid()):  # the parent adds us right after fork()
                await asyncio.sleep(0.002)
            table.mark_ready(os.getpid())
            while sum(p.ready for p in table.peers() if p.worker_id != 99) < n:
                await asyncio.sleep(0.005)
            pids = [p.pid for p in sorted(table.peers(), key=lambda p: p.worker_id or 0) if p.worker_id != 99]
            return await body(i, pids)

        result = loop.run_until_complete(asyncio.wait_for(main(), timeout))
        loop.run_until_complete(rt.exits.graceful(2.0))
        out: tuple[str, Any] = ("ok", result)
    except BaseException:  # noqa: BLE001 - report anything to the test
        out = ("err", traceback.format_exc())
    try:
        os.write(w, pickle.dumps(out))
    finally:
        os._exit(0)


BOX: dict[str, Any] = {}  # what init registered, for the body (one per forked process)


def collector(name: str, want: int) -> tuple[list[Any], asyncio.Future[None]]:
    """Register a handler for NAME that keeps (sender, data) until WANT have come.

    Call it from init (before the process is ready): a peer may send as soon as it is.
    """
    got: list[Any] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on(data: Any) -> None:
        got.append((ipc.sender, data))
        if len(got) >= want and not done.done():
            done.set_result(None)

    ipc.receive(name, on)
    return got, done


def test_send_reply_and_sender_keep_types() -> None:
    def init(i: int) -> None:
        if i == 1:
            ipc.receive("echo", lambda data: ipc.reply("echoed", data))

            async def later(data: Any) -> None:
                await asyncio.sleep(0.01)
                ipc.reply("echoed", ("after await", ipc.sender)[0])
            ipc.receive("async", later)

    async def body(i: int, pids: list[int]) -> Any:
        if i == 1:
            await asyncio.sleep(0.5)
            return None
        got, done = collector("echoed", 3)
        ipc.send(pids[1], "echo", "text é \udcff")
        ipc.send(pids[1], "echo", b"\x00bytes")
        ipc.send(pids[1], "async", b"")
        await asyncio.wait_for(done, 5)
        return got, pids[1], ipc.sender

    got, other, outside = run_tree(2, body, init)[0]
    assert got == [(other, "text é \udcff"), (other, b"\x00bytes"), (other, "after await")]
    assert outside is None


def test_broadcast_reaches_everyone_sender_included() -> None:
    def init(i: int) -> None:
        BOX["hello"] = collector("hello", 3)

    async def body(i: int, pids: list[int]) -> Any:
        got, done = BOX["hello"]
        ipc.broadcast("hello", f"from {i}")
        await asyncio.wait_for(done, 5)
        return sorted((pids.index(s), d) for s, d in got)

    for i, got in enumerate(run_tree(3, body, init)):
        assert got == [(0, "from 0"), (1, "from 1"), (2, "from 2")], i


def test_big_payloads_arrive_whole_and_typed() -> None:
    big = os.urandom(16 * 1024 * 1024 + 3)
    text = "ü€" * (1024 * 1024 // 5) + "end"  # multi-byte characters across packet edges

    def init(i: int) -> None:
        BOX["big"] = collector("big", 4)

    async def body(i: int, pids: list[int]) -> Any:
        got, done = BOX["big"]
        if i == 1:
            ipc.send(pids[0], "big", big)
            ipc.send(pids[0], "big", text)
            ipc.send(pids[0], "big", b"")
            ipc.send(pids[0], "big", big[: channel.PACKET * 2])
            await asyncio.sleep(0.2)
            return None
        await asyncio.wait_for(done, 20)
        return [d for _, d in got]

    got = run_tree(2, body, init)[0]
    assert got[0] == big and got[1] == text and got[2] == b"" and got[3] == big[: channel.PACKET * 2]
    assert type(got[1]) is str


def test_order_per_sender_and_no_mixing() -> None:
    count = 10_000
    chunk = b"z" * (3 * channel.PACKET + 17)

    def init(i: int) -> None:
        BOX["seq"] = collector("seq", 2 * count + 20)

    async def body(i: int, pids: list[int]) -> Any:
        got, done = BOX["seq"]
        if i == 0:
            await asyncio.wait_for(done, 30)
            return got
        for k in range(count):
            ipc.send(pids[0], "seq", f"{i}:{k}")
            if k % 1000 == 0:
                ipc.send(pids[0], "seq", bytes([i]) * 7 + chunk)  # multi-packet, interleaved with the other sender
                await asyncio.sleep(0)
        return None  # what is queued still leaves: a graceful exit drains it

    got = run_tree(3, body, init)[0]
    pids_seen: dict[int, list[int]] = {}
    for sender, data in got:
        if isinstance(data, bytes):
            assert data[:7] == data[:1] * 7 and data[7:] == chunk
            continue
        who, k = data.split(":")
        pids_seen.setdefault(sender, []).append(int(k))
    assert len(pids_seen) == 2
    for seq in pids_seen.values():
        assert seq == list(range(count))


def test_no_such_process() -> None:
    async def body(i: int, pids: list[int]) -> Any:
        errors = []
        for pid in (os.getppid(), 1, 2**22 + 5):
            try:
                ipc.send(pid, "x", b"")
            except IPCError as exc:
                errors.append(str(exc))
        return errors

    assert run_tree(1, body)[0] == ["no such process"] * 3


def test_squatted_name_is_refused() -> None:
    fake = 2**22 - 7  # in the table, but its name is bound by another process

    async def body(i: int, pids: list[int]) -> Any:
        if i == 0:
            squat = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            squat.bind(channel.address(os.getppid(), fake))
            squat.listen()
            await asyncio.sleep(1.0)
            squat.close()
            return None
        await asyncio.sleep(0.3)
        try:
            ipc.send(fake, "x", b"secret")
        except IPCError as exc:
            return str(exc)
        return "sent"

    assert run_tree(2, body, extra_pids=(fake,))[1] == "no such process"


def test_stranger_is_refused() -> None:
    handled: list[Any] = []

    def init(i: int) -> None:
        ipc.receive("x", handled.append)

    async def body(i: int, pids: list[int]) -> Any:
        if i == 0:
            await asyncio.sleep(1.0)
            return channel.statistics()["refused"], len(handled)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a grandchild: not a process of this master
            code = 1
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(channel.address(core.RT.master_pid or 0, pids[0]))
                    s.settimeout(3)
                    try:
                        s.sendall(channel.encode(b"x", b"hi", 0))
                        code = 0 if s.recv(10) == b"" else 2  # closed on us
                    except (ConnectionResetError, BrokenPipeError):
                        code = 0  # closed on us, our alert unread
            finally:
                os._exit(code)
        os.close(r)
        os.close(w)
        loop = asyncio.get_running_loop()
        _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
        return os.waitstatus_to_exitcode(status)

    refused, code = run_tree(2, body)
    assert refused == (1, 0)
    assert code == 0


@pytest.mark.parametrize(("limit", "pause", "expect"), [(64 << 20, 0.005, "timeout"), (1 << 20, 0.001, "queue full")])
def test_stuck_receiver_makes_send_fail_not_hang(limit: int, pause: float, expect: str) -> None:
    def init(i: int) -> None:
        if i == 1:
            ipc.receive("block", lambda data: time.sleep(2))  # blocks its whole loop

    async def body(i: int, pids: list[int]) -> Any:
        if i == 1:
            await asyncio.sleep(0.1)
            return None
        ipcconn.SEND_TIMEOUT = 0.5
        ipcconn.QUEUE_LIMIT = limit
        ipc.send(pids[1], "block", b"")
        ticks = 0
        started = time.monotonic()
        error = None
        while time.monotonic() - started < 1.8 and error is None:
            try:
                ipc.send(pids[1], "fill", b"f" * 65536)
            except IPCError as exc:
                error = str(exc)
            ticks += 1
            await asyncio.sleep(pause)
        return error, time.monotonic() - started, ticks

    error, took, ticks = run_tree(2, body, init)[0]
    assert error == expect
    assert took < 1.5 and ticks > 10  # the sender's loop kept turning


def test_internal_alerts_never_reach_user_handlers() -> None:
    handled: list[Any] = []

    def init(i: int) -> None:
        ipc.receive("wake", handled.append)
        got: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        def on(sender: int, data: Any) -> None:
            got.append((sender, data))
            if len(got) == 2 and not done.done():
                done.set_result(None)

        channel.receive_internal("wake", on)
        BOX["wake"] = got, done

    async def body(i: int, pids: list[int]) -> Any:
        got, done = BOX["wake"]
        channel.broadcast_internal("wake", b"w%d" % i)
        await asyncio.wait_for(done, 5)
        await asyncio.sleep(0.05)
        return sorted((pids.index(pid), data) for pid, data in got), handled

    assert run_tree(2, body, init) == [([(0, b"w0"), (1, b"w1")], [])] * 2


def test_a_drop_is_a_warning_only_for_a_live_peer_of_the_current_generation() -> None:
    table = tree.Tree()
    with support.as_runtime(tree=table) as rt:
        table.set_generation(2, os.getpid())
        table.add(1001, state.WORKER, 0, 1)  # an old worker, leaving after a reload
        table.add(1002, state.WORKER, 0, 2)
        assert [ipcconn.live_current(pid) for pid in (1001, 1002, 1003)] == [False, True, False]
        rt.exiting = True  # this process is leaving too: every drop is expected
        assert not ipcconn.live_current(1002)
