"""The allocator inside a zone: one size class of 64-byte chunks, items are chains of chunks.

Owns the chunk geometry and the free list. Knows nothing of keys or LRU.

Why one class: nginx's slab (power-of-two classes in 4 KB pages) can answer
"no memory" while half the zone is free, when the free memory sits in pages of
the wrong class; evicting LRU items of another class does not help. Here any
free chunk serves any item, so a write fails only when the zone really holds
fewer free chunks than it needs after eviction. The cost is a 4-byte link per
chunk and a walk over the chain for values longer than 24 bytes.

Chunk layout (little-endian). Every chunk starts with ``next`` (u32): the next
chunk of the same item, or of the free list. The first chunk of an item adds::

    4 hnext u32    next item in the hash bucket
    8 prev  u32   12 lnext u32    LRU neighbours (towards MRU / towards LRU)
   16 expires f64 (absolute time.time(), 0 = never)
   24 hash u32   28 vlen u32   32 flags u32   36 klen u16   38 vtype u8
   40 data: key then value, continued at byte 4 of the following chunks
"""
from __future__ import annotations

import struct
from array import array

from pyngx.shm import zone as z

CHUNK = 64
HEAD_DATA = 24  # data bytes in an item's first chunk
MORE_DATA = 60  # data bytes in each following chunk
HEAD_OFF = 40
MORE_OFF = 4

_U32 = struct.Struct("<I")


def chunks_for(nbytes: int) -> int:
    """Chunks needed by an item whose key plus value take NBYTES."""
    if nbytes <= HEAD_DATA:
        return 1
    return 1 + (nbytes - HEAD_DATA + MORE_DATA - 1) // MORE_DATA


def geometry(size: int) -> tuple[int, int]:
    """(nbuckets, nchunks) for a zone of SIZE bytes: buckets take about 3%, chunks the rest."""
    per = max(size // 130, 1)
    nbuckets = 1 << (per.bit_length() - 1)
    nchunks = (size - 4 * nbuckets) // CHUNK
    if nchunks < 1:
        raise ValueError("shared dict size too small")
    return nbuckets, nchunks


def format_zone(r: z.Region) -> None:
    """Lay out buckets and a free list holding every chunk (no journal: nobody sees it yet)."""
    nbuckets, nchunks = geometry(r.size)
    buckets = z.OVERHEAD
    cbase = buckets + 4 * nbuckets - CHUNK  # chunk i lives at cbase + 64 * i, i >= 1
    for off, value in ((z.H_NBUCKETS, nbuckets), (z.H_NCHUNKS, nchunks), (z.H_BUCKETS, buckets),
                       (z.H_CBASE, cbase), (z.H_FREE, 1), (z.H_NFREE, nchunks)):
        _U32.pack_into(r.mm, off, value)
    words = r.mv[cbase + CHUNK:cbase + CHUNK * (nchunks + 1)].cast("I")
    links = array("I", range(2, nchunks + 2))
    links[-1] = 0
    words[::CHUNK // 4] = links  # every chunk's first word: the next free chunk
    words.release()


def alloc(r: z.Region, cbase: int, count: int) -> int:
    """Take COUNT chunks off the free list as one chain; returns its first chunk, 0 if too few."""
    mm = r.mm
    nfree = _U32.unpack_from(mm, z.H_NFREE)[0]
    if nfree < count:
        return 0
    first = _U32.unpack_from(mm, z.H_FREE)[0]
    last = first
    for _ in range(count - 1):
        last = _U32.unpack_from(mm, cbase + CHUNK * last)[0]
    rest = _U32.unpack_from(mm, cbase + CHUNK * last)[0]
    r.w32(cbase + CHUNK * last, 0)
    r.w32(z.H_FREE, rest)
    r.w32(z.H_NFREE, nfree - count)
    return first


def free(r: z.Region, cbase: int, first: int) -> int:
    """Give the chain starting at FIRST back to the free list; returns its length."""
    mm = r.mm
    last, count = first, 1
    while True:
        nxt = _U32.unpack_from(mm, cbase + CHUNK * last)[0]
        if nxt == 0:
            break
        last, count = nxt, count + 1
    r.w32(cbase + CHUNK * last, _U32.unpack_from(mm, z.H_FREE)[0])
    r.w32(z.H_FREE, first)
    r.w32(z.H_NFREE, _U32.unpack_from(mm, z.H_NFREE)[0] + count)
    return count


def data_spans(cbase: int, mm: object, first: int, start: int, length: int) -> list[tuple[int, int]]:
    """Absolute (offset, length) pieces of bytes START..START+LENGTH of the item at FIRST."""
    spans: list[tuple[int, int]] = []
    idx, base, room, off = first, 0, HEAD_DATA, HEAD_OFF
    end = start + length
    while length > 0 and idx:
        lo, hi = max(start, base), min(end, base + room)
        if lo < hi:
            spans.append((cbase + CHUNK * idx + off + lo - base, hi - lo))
        if base + room >= end:
            break
        base += room
        room, off = MORE_DATA, MORE_OFF
        idx = _U32.unpack_from(mm, cbase + CHUNK * idx)[0]  # type: ignore[arg-type]
    return spans


def read_data(r: z.Region, cbase: int, first: int, start: int, length: int) -> bytes:
    """Bytes START..START+LENGTH of the item's key+value data."""
    if start + length <= HEAD_DATA:
        off = cbase + CHUNK * first + HEAD_OFF + start
        return r.mm[off:off + length]
    mm = r.mm
    return b"".join(mm[o:o + n] for o, n in data_spans(cbase, mm, first, start, length))


def write_fresh(r: z.Region, cbase: int, first: int, data: bytes) -> None:
    """Fill a chain just allocated (no journal needed: undoing the allocation frees it)."""
    mm = r.mm
    pos = 0
    for o, n in data_spans(cbase, mm, first, 0, len(data)):
        mm[o:o + n] = data[pos:pos + n]
        pos += n
