"""sd_notify over a real datagram socket, socket activation, the user lookup."""
from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx.proc import service


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_notify_without_systemd_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.notify("READY=1") is False


def test_ready_carries_mainpid(notify_socket: socket.socket) -> None:
    assert service.notify_ready(4321)
    fields = notify_socket.recv(4096).decode().split("\n")
    assert "READY=1" in fields and "MAINPID=4321" in fields


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert service.notify_reloading()
    fields = dict(f.split("=", 1) for f in notify_socket.recv(4096).decode().split("\n"))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_stopping(notify_socket: socket.socket) -> None:
    assert service.notify_stopping()
    assert b"STOPPING=1" in notify_socket.recv(4096)


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pyngx-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert service.notify("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_listen_fds_takes_our_sockets_once(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    saved = os.dup(3) if _fd_open(3) else None
    try:
        os.dup2(listener.fileno(), 3)
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDS", "1")
        got = service.listen_fds()
        assert list(got) == [("127.0.0.1", port)]
        assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
        got[("127.0.0.1", port)].detach()
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        listener.close()


def test_listen_fds_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert service.listen_fds() == {}
    assert "LISTEN_FDS" not in os.environ


def test_resolve_user() -> None:
    assert service.resolve_user("root", None) == (0, 0)
    with pytest.raises(KeyError, match=r'getpwnam\("no-such-user-pyngx"\) failed'):
        service.resolve_user("no-such-user-pyngx", None)
    with pytest.raises(KeyError, match=r'getgrnam\("no-such-group-pyngx"\) failed'):
        service.resolve_user("root", "no-such-group-pyngx")


def test_reset_signals_restores_defaults_and_keeps_the_child_signals_blocked() -> None:
    old = signal.signal(signal.SIGUSR2, lambda s, f: None)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    try:
        service.reset_signals()
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
        assert service.CHILD_SIGNALS <= signal.pthread_sigmask(signal.SIG_BLOCK, set())
        service.unblock_child_signals()
        assert not service.CHILD_SIGNALS & signal.pthread_sigmask(signal.SIG_BLOCK, set())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGUSR2, old)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
