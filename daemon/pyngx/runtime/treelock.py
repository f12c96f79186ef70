"""Named locks held by one process of the whole tree, freed by the kernel when it dies.

Owns the lock file and the name-to-byte mapping behind ``ngx.timer.every(...,
unique="NAME")``. A lock is a POSIX byte-range lock (``F_SETLK`` through
``fcntl.lockf``) on one byte of a memfd. Such locks belong to a process, not to
a descriptor: a forked child does not inherit its parent's locks, and the
kernel drops them when the holder exits or is killed, even by SIGKILL. (OFD
locks would be shared by every process that inherited the descriptor, which is
the opposite of what we want.)

The memfd is created when this module is first imported. The master imports it
before its first fork (`pyngx.runtime.timers` imports it, and the master
preloads that), so every worker, the agent and every later generation take
their locks on the same file. Nothing here knows of timers or asyncio.

One caveat of POSIX locks: closing *any* descriptor of the file drops the
process's locks on it, so the descriptor is never duplicated or reopened.
"""
from __future__ import annotations

import fcntl
import os


def _open() -> int:
    try:
        return os.memfd_create("pyngx-tree-locks", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # pragma: no cover - kernels without memfd
        import tempfile

        fd, path = tempfile.mkstemp(prefix="pyngx-tree-locks-")
        os.unlink(path)
        os.set_inheritable(fd, False)
        return fd


FD = _open()


def offset(name: str) -> int:
    """The byte that stands for NAME (a 56-bit hash: no collisions in practice)."""
    import hashlib  # here: OpenSSL's initialisation is not a start's (the master imports this module)

    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


def try_lock(name: str) -> bool:
    """Take NAME's lock without waiting; False when another process holds it.

    Taking a lock this process already holds succeeds (POSIX locks do not
    count): the caller keeps track of its own holders.
    """
    try:
        fcntl.lockf(FD, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset(name), os.SEEK_SET)
    except OSError:
        return False
    return True


def unlock(name: str) -> None:
    """Release NAME's lock (nothing happens when this process does not hold it)."""
    fcntl.lockf(FD, fcntl.LOCK_UN, 1, offset(name), os.SEEK_SET)
