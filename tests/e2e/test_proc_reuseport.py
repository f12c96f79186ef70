"""``listen ... reuseport``: one SO_REUSEPORT socket per worker, kept across respawn and reload.

The sockets are told apart by inode: /proc/net/tcp lists the listening ones
on the port, /proc/PID/fd shows which of them a process holds.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from support import BAD_LEVELS, Daemon, children, proc_title, wait_until

CONF = """
worker_processes @N@;
@MASTER@
error_log logs/error.log info;
worker_shutdown_timeout 5s;
events { worker_connections 64; }
http {
    init_by_python_block { ngx.process.enable_privileged_agent() }
    server {
        listen 127.0.0.1:@PORT@ reuseport;
        location / { content_by_python_block { ngx.print(ngx.worker.pid()) } }
    }
}
"""


def conf(workers: int, master: bool = True) -> str:
    return CONF.replace("@N@", str(workers)).replace("@MASTER@", "" if master else "master_process off;")


def listening(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on 127.0.0.1:PORT."""
    local = f"0100007F:{port:04X}"
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":
            out.add(int(fields[9]))
    return out


def held(pid: int, among: set[int]) -> set[int]:
    """Which of the socket inodes AMONG process PID has open."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            if inode in among:
                out.add(inode)
    return out


def agent(d: Daemon) -> int:
    return wait_until(lambda: next((p for p in children(d.master_pid) if "privileged agent" in proc_title(p)), 0),
                      what="the agent")


def sockets_by_worker(d: Daemon, count: int) -> dict[int, int]:
    """{worker pid: its one listening inode} once COUNT workers each hold exactly one, all different.

    Right after a reload an old worker may not have begun shutting down yet (its title
    is still the plain one) and shares a socket with its successor: wait that out.
    """
    def ready() -> dict[int, int] | None:
        inodes = listening(d.port)
        workers = [p for p in d.workers() if "shutting down" not in proc_title(p)]
        if len(inodes) != count or len(workers) != count:
            return None
        mine = {pid: held(pid, inodes) for pid in workers}
        if any(len(s) != 1 for s in mine.values()):
            return None
        by_worker = {pid: s.pop() for pid, s in mine.items()}
        return by_worker if len(set(by_worker.values())) == count else None
    return wait_until(ready, what=f"{count} workers with one socket each")  # type: ignore[no-any-return]


def answered_by(d: Daemon, pids: set[int]) -> None:
    """Every worker in PIDS answers some connection (the kernel hashes connections to sockets)."""
    seen: set[int] = set()

    def more() -> bool:
        status, body = d.get("/")
        assert status == 200
        seen.add(int(body))
        return pids <= seen
    wait_until(more, what=f"answers from {pids}")


def test_reuseport_socket_per_worker_respawn_and_reload(daemon: object) -> None:
    d: Daemon = daemon(conf(2))  # type: ignore[operator]
    by_worker = sockets_by_worker(d, 2)
    inodes = set(by_worker.values())
    assert held(d.master_pid, inodes) == inodes  # the master keeps them all for respawn and reload
    assert held(agent(d), inodes) == set()  # the agent listens on nothing
    answered_by(d, set(by_worker))

    victim = next(iter(by_worker))
    os.kill(victim, signal.SIGKILL)
    again = wait_until(lambda: victim not in (b := sockets_by_worker(d, 2)) and b, what="a respawn")
    assert set(again.values()) == inodes
    new_pid = next(p for p in again if p not in by_worker)
    assert again[new_pid] == by_worker[victim]  # the same worker id, the same socket
    answered_by(d, set(again))

    d.signal(signal.SIGHUP)  # same address, same count: the same sockets
    reloaded = wait_until(lambda: not set(b := sockets_by_worker(d, 2)) & set(again) and b, what="new workers")
    assert set(reloaded.values()) == inodes
    answered_by(d, set(reloaded))

    d.write_conf(conf(3))  # one more worker: one more socket, the first two kept
    d.signal(signal.SIGHUP)
    grown = wait_until(lambda: not set(b := sockets_by_worker(d, 3)) & set(reloaded) and b, what="3 workers")
    assert inodes < set(grown.values())
    answered_by(d, set(grown))

    d.stop()
    d.expect_errors = True  # the one [alert] is the SIGKILL above
    bad = [ln for ln in d.error_log().splitlines() if any(lv in ln for lv in BAD_LEVELS)]
    assert len(bad) == 1 and f"worker process {victim} exited on signal 9" in bad[0], bad


def test_reuseport_single_process_binds_one(daemon: object) -> None:
    d: Daemon = daemon(conf(2, master=False))  # type: ignore[operator]
    inodes = listening(d.port)
    assert len(inodes) == 1
    assert held(d.master_pid, inodes) == inodes
    status, body = d.get("/")
    assert (status, int(body)) == (200, d.master_pid)


def test_reload_turns_a_plain_socket_reuseport(daemon: object) -> None:
    d: Daemon = daemon(conf(2).replace(" reuseport;", ";"))  # type: ignore[operator]
    (plain,) = wait_until(lambda: listening(d.port), what="the listening socket")
    first = set(d.workers())
    d.write_conf(conf(2))
    d.signal(signal.SIGHUP)
    reloaded = wait_until(lambda: not set(b := sockets_by_worker(d, 2)) & first and b, what="new workers")
    assert plain in reloaded.values()  # the old socket, now SO_REUSEPORT, is worker 0's
    answered_by(d, set(reloaded))
