"""Item layout inside a zone: hash buckets, the LRU list, expiry, values as typed bytes.

Owns the head-chunk fields (see slab.py), the value encoding shared with the C
extension, and the steps every operation is built from (find, insert, remove,
touch, evict). Each step writes through the Region's journal; the caller holds
the lock and commits or rolls back. Knows nothing of the public API's
arguments or of processes.
"""
from __future__ import annotations

import struct
import time
import zlib
from typing import Any

import msgpack

from pyngx.errors import NoMemoryError
from pyngx.shm import slab
from pyngx.shm import zone as z

# value types (byte 38 of the head chunk); the C extension uses the same numbers
T_STR, T_BYTES, T_INT, T_FLOAT, T_BOOL, T_PACK, T_LIST = 1, 2, 3, 4, 5, 6, 7
MAX_EVICT = 30  # lua-nginx-module: a store evicts at most 30 items before "no memory"

# offsets in the head chunk (``next`` is at 0)
F_HNEXT, F_PREV, F_LNEXT, F_EXP, F_HASH, F_VLEN, F_FLAGS, F_KLEN, F_TYPE = 4, 8, 12, 16, 24, 28, 32, 36, 38
_HEAD = struct.Struct("<IIIIdIIIHB")  # next hnext prev lnext expires hash vlen flags klen vtype
_FRESH = struct.Struct("<IIIdIIIHB")  # the same from hnext on: what a new item writes
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_Q = struct.Struct("<q")
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


def key_hash(kb: bytes) -> int:
    return zlib.crc32(kb)


def encode(value: Any) -> tuple[int, bytes]:
    """(type, bytes) of a storable value.

    Raises TypeError for a type a shared dict cannot hold, ValueError for an int out of 64 bits.
    """
    t = type(value)
    if t is str:
        return T_STR, value.encode()
    if t is bool:
        return T_BOOL, b"\x01" if value else b"\x00"
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError("integer out of the 64-bit range")
        return T_INT, _Q.pack(value)
    if t is float:
        return T_FLOAT, _F64.pack(value)
    if t is bytes or t is bytearray or t is memoryview:
        return T_BYTES, bytes(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return T_PACK, msgpack.packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"bad value type: {exc}") from None
    raise TypeError(f"bad value type {t.__name__}")


def decode(vtype: int, raw: bytes) -> Any:
    if vtype == T_STR:
        return raw.decode()
    if vtype == T_BYTES:
        return bytes(raw)
    if vtype == T_INT:
        return _Q.unpack(raw)[0]
    if vtype == T_FLOAT:
        return _F64.unpack(raw)[0]
    if vtype == T_BOOL:
        return raw == b"\x01"
    if vtype == T_PACK:
        return msgpack.unpackb(raw, strict_map_key=False)
    raise ValueError(f"unknown value type {vtype}")


class Items:
    """The steps of every operation over one Region (caller holds the lock)."""

    __slots__ = ("r", "mm", "cbase", "buckets", "mask")

    def __init__(self, r: z.Region) -> None:
        self.r = r
        self.mm = r.mm
        self.cbase = r.r32(z.H_CBASE)
        self.buckets = r.r32(z.H_BUCKETS)
        self.mask = r.r32(z.H_NBUCKETS) - 1

    def at(self, idx: int) -> int:
        return self.cbase + slab.CHUNK * idx

    def head(self, idx: int) -> tuple[int, ...]:
        """(next, hnext, prev, lnext, expires, hash, vlen, flags, klen, vtype) of item IDX."""
        return _HEAD.unpack_from(self.mm, self.at(idx))

    def find(self, kb: bytes, h: int) -> tuple[int, int]:
        """(item, previous item in its bucket or 0); item 0 when absent."""
        mm, prev = self.mm, 0
        idx = _U32.unpack_from(mm, self.buckets + 4 * (h & self.mask))[0]
        klen = len(kb)
        while idx:
            off = self.cbase + slab.CHUNK * idx
            hnext, = _U32.unpack_from(mm, off + F_HNEXT)
            if (_U32.unpack_from(mm, off + F_HASH)[0] == h
                    and struct.unpack_from("<H", mm, off + F_KLEN)[0] == klen
                    and slab.read_data(self.r, self.cbase, idx, 0, klen) == kb):
                return idx, prev
            prev, idx = idx, hnext
        return 0, 0

    def expires(self, idx: int) -> float:
        return _F64.unpack_from(self.mm, self.at(idx) + F_EXP)[0]

    def is_expired(self, idx: int, now: float) -> bool:
        exp = _F64.unpack_from(self.mm, self.at(idx) + F_EXP)[0]
        return exp != 0.0 and exp <= now

    def key(self, idx: int) -> bytes:
        klen = struct.unpack_from("<H", self.mm, self.at(idx) + F_KLEN)[0]
        return slab.read_data(self.r, self.cbase, idx, 0, klen)

    def value(self, idx: int) -> tuple[int, bytes]:
        h = self.head(idx)
        return h[9], slab.read_data(self.r, self.cbase, idx, h[8], h[6])

    # -- LRU --
    def _lru_unlink(self, idx: int) -> None:
        r, off = self.r, self.at(idx)
        prev, lnext = struct.unpack_from("<II", self.mm, off + F_PREV)
        if prev:
            r.w32(self.at(prev) + F_LNEXT, lnext)
        else:
            r.w32(z.H_LRU_HEAD, lnext)
        if lnext:
            r.w32(self.at(lnext) + F_PREV, prev)
        else:
            r.w32(z.H_LRU_TAIL, prev)

    def _lru_push_head(self, idx: int, fresh: bool) -> None:
        r, off = self.r, self.at(idx)
        old = r.r32(z.H_LRU_HEAD)
        if fresh:
            struct.pack_into("<II", self.mm, off + F_PREV, 0, old)
        else:
            r.w32(off + F_PREV, 0)
            r.w32(off + F_LNEXT, old)
        if old:
            r.w32(self.at(old) + F_PREV, idx)
        else:
            r.w32(z.H_LRU_TAIL, idx)
        r.w32(z.H_LRU_HEAD, idx)

    def touch(self, idx: int) -> None:
        """Make IDX the most recently used item."""
        if self.r.r32(z.H_LRU_HEAD) != idx:
            self._lru_unlink(idx)
            self._lru_push_head(idx, fresh=False)

    # -- insert / remove --
    def remove(self, idx: int, prev: int) -> None:
        """Unlink item IDX (PREV: its bucket predecessor, 0 if first) and free its chunks."""
        r, off = self.r, self.at(idx)
        hnext, = _U32.unpack_from(self.mm, off + F_HNEXT)
        if prev:
            r.w32(self.at(prev) + F_HNEXT, hnext)
        else:
            h, = _U32.unpack_from(self.mm, off + F_HASH)
            r.w32(self.buckets + 4 * (h & self.mask), hnext)
        self._lru_unlink(idx)
        slab.free(r, self.cbase, idx)
        r.w32(z.H_ITEMS, r.r32(z.H_ITEMS) - 1)

    def remove_item(self, idx: int) -> None:
        """Remove IDX, finding its bucket predecessor (by index: a new item may share its key)."""
        h, = _U32.unpack_from(self.mm, self.at(idx) + F_HASH)
        prev, cur = 0, _U32.unpack_from(self.mm, self.buckets + 4 * (h & self.mask))[0]
        while cur and cur != idx:
            prev, cur = cur, _U32.unpack_from(self.mm, self.at(cur) + F_HNEXT)[0]
        assert cur == idx, "item not in its bucket"
        self.remove(idx, prev)

    def expire_tail(self, n: int, now: float) -> tuple[int, bool]:
        """lua-nginx-module's shdict_expire(ctx, 1): free up to two expired items at the LRU tail.

        Committed on its own: removing expired items is invisible to readers, and a
        later allocation in the same step must never reuse chunks freed in it.
        Returns (freed, False).
        """
        freed = 0
        while n < 3:
            tail = self.r.r32(z.H_LRU_TAIL)
            if not tail or not self.is_expired(tail, now):
                break
            n += 1
            self.remove_item(tail)
            freed += 1
        self.r.commit()
        return freed, False

    def chain_len(self, idx: int) -> int:
        h = self.head(idx)
        return slab.chunks_for(h[8] + h[6])

    def put(self, kb: bytes, h: int, old: int, vtype: int, payload: bytes, expires: float,
            flags: int, *, evict: bool, now: float) -> bool:
        """Store a new item (replacing item OLD, 0 if none) as the most recently used.

        The last write of an operation. Chunks freed by a step are never filled in
        that same step (the journal could not undo the overwrite), so:
        - enough free chunks: one step — link the new item, then unlink OLD;
        - otherwise: first a step that unlinks OLD and evicts LRU items (at most
          MAX_EVICT, as lua-nginx-module), committed, then a step that links the
          new item. A crash between the two leaves the key deleted, never a
          broken zone. Whether it will fit is decided before anything changes.
        Returns forcible (valid items were evicted). Raises NoMemoryError, changing nothing.
        """
        r = self.r
        need = slab.chunks_for(len(kb) + len(payload))
        nfree = r.r32(z.H_NFREE)
        if nfree >= need:
            self._link_new(kb, h, vtype, payload, expires, flags, need)
            if old:
                self.remove_item(old)
            return False
        room = nfree + (self.chain_len(old) if old else 0)
        victims = []
        if evict and room < need:
            idx = r.r32(z.H_LRU_TAIL)
            while idx and room < need and len(victims) < MAX_EVICT:
                if idx != old:
                    victims.append(idx)
                    room += self.chain_len(idx)
                idx = self.head(idx)[2]
        if room < need:
            raise NoMemoryError()
        if old:
            self.remove_item(old)
        forcible = False
        for idx in victims:
            if not self.is_expired(idx, now):
                forcible = True
                self.evictions_add(1)
            self.remove_item(idx)
        r.commit()
        self._link_new(kb, h, vtype, payload, expires, flags, need)
        return forcible

    def _link_new(self, kb: bytes, h: int, vtype: int, payload: bytes, expires: float, flags: int,
                  need: int) -> None:
        r = self.r
        first = slab.alloc(r, self.cbase, need)
        assert first, "allocation checked before"
        off = self.at(first)
        bucket = self.buckets + 4 * (h & self.mask)
        # never rewrite the chain link at byte 0, not even with its own value: pack_into
        # zeroes before it writes, and a kill in between would cut the free list that
        # undoing this allocation gives back
        _FRESH.pack_into(self.mm, off + F_HNEXT, r.r32(bucket), 0, 0, expires, h, len(payload),
                         flags, len(kb), vtype)
        slab.write_fresh(r, self.cbase, first, kb + payload)
        r.w32(bucket, first)
        self._lru_push_head(first, fresh=True)
        r.w32(z.H_ITEMS, r.r32(z.H_ITEMS) + 1)

    def set_expires(self, idx: int, expires: float) -> None:
        self.r.w64(self.at(idx) + F_EXP, _F64.pack(expires))

    def write_value(self, idx: int, raw: bytes) -> None:
        """Overwrite the value in place (same length), journaled."""
        h = self.head(idx)
        pos = 0
        for o, n in slab.data_spans(self.cbase, self.mm, idx, h[8], len(raw)):
            self.r.wbytes(o, raw[pos:pos + n])
            pos += n

    def evictions_add(self, n: int) -> None:
        self.r.w64(z.H_EVICTIONS, struct.pack("<Q", struct.unpack_from("<Q", self.mm, z.H_EVICTIONS)[0] + n))


def now() -> float:
    return time.time()
