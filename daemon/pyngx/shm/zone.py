"""One shared memory region: a fixed header, an undo journal, the lock, then SIZE bytes.

Owns the mapping (a memfd mapped MAP_SHARED, inherited across fork), the
cross-process lock and the undo journal that makes every mutation atomic even
when its process is killed half-way. Knows nothing of keys, values or the
allocator's policy: shdict.py and slab.py write through ``w32``/``w64``/
``wbytes`` and call ``commit`` at the end of each step.

Crash safety. Every write to a word that is live before the operation began
is first recorded in the journal as (offset, width, old bytes); writes into
chunks just taken from the free list need no record, because undoing the
allocation makes them free again. ``commit()`` empties the journal with one
store. The journal count and the owner word are written with one aligned
4-byte store each (through a ``memoryview`` cast), never with
``struct.pack_into``: that zeroes its target and then writes it a byte at a
time, so a kill in between would leave a count of 0 and the dead holder's
half-done step could never be undone. A process killed while holding the
lock leaves a non-empty journal; whoever recovers the lock
(``force_unlock(pid)`` in the master, or the next locker when the kernel
dropped a dead holder's fcntl lock) replays it backwards, so the killed
operation never happened.

Two lock kinds, chosen at creation and recorded in the header:
- ``LOCK_ATOMIC``: the owner word is taken with compare-and-swap by the C
  extension (pyngx.shm._shdict), nginx's pid-stamped ngx_shmtx in spirit.
- ``LOCK_FCNTL``: a POSIX record lock on the memfd (pure Python); the kernel
  drops it when the holder dies, and the owner word still tells the next
  locker that a journal may need replaying.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading

MAGIC = b"PYNGXSH1"
HEADER = 4096  # the fixed header: counters, list heads, name
JOURNAL_CAP = 512  # entries; an insert evicts at most 30 items, ~8 words each
JOURNAL = JOURNAL_CAP * 16
OVERHEAD = HEADER + JOURNAL  # memory beyond the declared size
LOCK_ATOMIC = 1
LOCK_FCNTL = 2

# header words (byte offsets); everything the data structure mutates is journaled
H_MAGIC = 0  # 8 bytes
H_SIZE = 8  # u64 declared size
H_OWNER = 16  # u32 pid holding the lock (the CAS word in atomic mode)
H_JCOUNT = 20  # u32 journal entries
H_NCHUNKS = 24  # u32
H_NBUCKETS = 28  # u32, a power of two
H_FREE = 32  # u32 free list head (chunk index, 0 = none)
H_NFREE = 36  # u32 free chunk count
H_LRU_HEAD = 40  # u32 most recently used item
H_LRU_TAIL = 44  # u32 least recently used item
H_ITEMS = 48  # u32
H_LOCKKIND = 52  # u32
H_EVICTIONS = 56  # u64
H_BUCKETS = 64  # u32 offset of the bucket array
H_CBASE = 68  # u32 offset of chunk index 0 (index 0 is never used: it means "none")
H_NAME = 128  # 64 bytes, for humans reading a core dump

_OWNER, _JCOUNT = H_OWNER >> 2, H_JCOUNT >> 2  # as indexes of 4-byte words
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_JENT = struct.Struct("<II8s")


class Region:
    """The mapping, its lock and its journal."""

    __slots__ = ("fd", "mm", "mv", "u32", "size", "lock_kind", "_tlock", "_holder", "_c", "closed")

    def __init__(self, name: str, size: int, lock_kind: int, c_lock: object | None) -> None:
        self.size = size
        self.lock_kind = lock_kind
        self.fd = os.memfd_create(f"pyngx-shdict-{name}"[:200], os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, OVERHEAD + size)
            self.mm = mmap.mmap(self.fd, OVERHEAD + size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(self.fd)
            raise
        # fds are closed on exec only; fork keeps them, which fcntl locking needs
        os.set_inheritable(self.fd, True)
        self.mv = memoryview(self.mm)
        # 4-byte words as one store each; the mapping's tail past a multiple of 8 holds no word
        length = OVERHEAD + size
        self.u32 = self.mv[:length - length % 8].cast("I")
        self._tlock = threading.Lock()
        self._holder = 0  # the thread holding the lock (fcntl kind)
        self._c = c_lock
        self.closed = False
        self.mm[H_MAGIC:H_MAGIC + 8] = MAGIC
        _U64.pack_into(self.mm, H_SIZE, size)
        _U32.pack_into(self.mm, H_LOCKKIND, lock_kind)
        raw = name.encode()[:63]
        self.mm[H_NAME:H_NAME + len(raw)] = raw

    # -- words --
    def r32(self, off: int) -> int:
        return self.u32[off >> 2]  # type: ignore[no-any-return]

    def w32(self, off: int, value: int) -> None:
        """Journal the old word (OFF is 4-aligned), then write VALUE."""
        self._journal(off, 4)
        self.u32[off >> 2] = value

    def w64(self, off: int, raw: bytes) -> None:
        """Journal 8 old bytes, then write RAW (8 bytes)."""
        self._journal(off, 8)
        self.mm[off:off + 8] = raw

    def wbytes(self, off: int, raw: bytes) -> None:
        """Journal then write RAW in pieces of at most 8 bytes."""
        for i in range(0, len(raw), 8):
            piece = raw[i:i + 8]
            self._journal(off + i, len(piece))
            self.mm[off + i:off + i + len(piece)] = piece

    def _journal(self, off: int, width: int) -> None:
        words = self.u32
        n = words[_JCOUNT]
        if n >= JOURNAL_CAP:
            raise RuntimeError("shared dict journal overflow")
        _JENT.pack_into(self.mm, HEADER + n * 16, off, width, bytes(self.mm[off:off + width]))
        # the entry is complete before the count covers it, and the count moves in one store
        words[_JCOUNT] = n + 1

    def commit(self) -> None:
        """The step is complete: forget its undo records."""
        self.u32[_JCOUNT] = 0

    def rollback(self) -> int:
        """Undo the current step (a failed operation, or a dead holder's); returns records undone."""
        n = self.u32[_JCOUNT]
        for i in range(n - 1, -1, -1):
            off, width, old = _JENT.unpack_from(self.mm, HEADER + i * 16)
            self.mm[off:off + width] = old[:width]
        self.u32[_JCOUNT] = 0
        return n

    # -- the lock --
    def lock(self) -> None:
        """Take the zone lock; replays a dead holder's journal first."""
        if self._c is not None:
            self._c.lock()  # type: ignore[attr-defined]
            return
        me = threading.get_ident()
        if self._holder == me:
            # a finalizer or signal handler calling in while this thread holds the zone
            raise RuntimeError("shared dict zone lock re-entered by its holder")
        self._tlock.acquire()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
        except BaseException:
            self._tlock.release()
            raise
        self._holder = me
        words = self.u32
        if words[_OWNER] or words[_JCOUNT]:
            self.rollback()  # the previous holder died: the kernel dropped its lock
        words[_OWNER] = os.getpid()

    def unlock(self) -> None:
        if self._c is not None:
            self._c.unlock()  # type: ignore[attr-defined]
            return
        self.u32[_OWNER] = 0
        self._holder = 0
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)
        self._tlock.release()

    def force_unlock(self, pid: int) -> bool:
        """The master saw PID die: if it held the lock, undo its step and free the lock."""
        if self.closed:
            return False
        if self._c is not None:
            return bool(self._c.force_unlock(pid))  # type: ignore[attr-defined]
        if self.u32[_OWNER] != pid:
            return False
        self._tlock.acquire()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
            held = self.u32[_OWNER] == pid
            if held:
                self.rollback()
                self.u32[_OWNER] = 0
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)
        finally:
            self._tlock.release()
        return held

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._c = None
        self.u32.release()
        self.mv.release()
        self.mm.close()
        os.close(self.fd)
