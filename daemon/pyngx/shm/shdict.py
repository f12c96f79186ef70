"""Shared dict zones: OpenResty's ngx.shared.DICT over one fixed-size shared memory region.

Owns the operations (get/set/incr/lists/expiry/flush/...), their argument
checks and OpenResty's errors. Knows nothing of asyncio, phases or the config:
the master, workers, the agent and single mode call it the same way.

Contract with the process engine (pyngx.proc):

- ``create(name, size, impl=None) -> Zone``: in the master before fork (and in
  single mode / ``pyngx -e --shdict``). Memory is exactly SIZE plus a fixed
  header of ``zone.OVERHEAD`` bytes (a memfd mapped MAP_SHARED, inherited across
  fork); it never grows. ``impl`` is ``"c"`` (the C extension's lock and hot
  path), ``"py"`` (pure Python, fcntl record locks) or None (C when built,
  unless ``PYNGX_SHDICT_PURE=1``).
- ``zone.force_unlock(pid) -> bool``: the master calls it for every zone when a
  child dies; if PID held the lock, its unfinished step is undone from the
  journal and the lock freed (True).
- ``rebuild(old, new_size) -> Zone``: a new zone keeping as many of OLD's live
  items as fit, most recently used first (also ``new.rebuild(old)``).
- ``zone.save(path)`` writes atomically (temp file + rename);
  ``zone.load(path) -> int`` loads items, drops expired ones, raises
  ValueError on a corrupt or foreign file (the caller logs and ignores it).
- ``zone.close()``, ``zone.check()`` (walks the structure, AssertionError on a
  broken invariant), ``zone.statistics() -> dict`` (capacity, free, items,
  evictions, ... for the status endpoint), ``zone.capacity()``.
- The facade (pyngx.shared) finds zones in ``pyngx.runtime.core.RT.shdicts``.
"""
from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Any

from pyngx.errors import (IsAListError, KeyExistsError, KeyNotFoundError, NoMemoryError, NotAListError,
                          NotANumberError)
from pyngx.shm import items as it_
from pyngx.shm import slab, walk
from pyngx.shm import zone as z
from pyngx.shm.items import T_FLOAT, T_INT, T_LIST, decode, encode, key_hash

try:
    from pyngx.shm import _shdict as _c  # type: ignore[attr-defined]
except ImportError:  # no compiler when installed: the pure-Python engine does everything
    _c = None

SET, ADD, REPLACE = 0, 1, 2
# the operations the C engine runs itself (the others run here, under its lock)
HOT = ("get", "set", "safe_set", "add", "safe_add", "replace", "incr", "delete",
       "lpush", "rpush", "lpop", "rpop", "llen")
_LHEAD = struct.Struct("<I")
_LEL = struct.Struct("<BI")


def c_available() -> bool:
    return _c is not None


def create(name: str, size: int, impl: str | None = None) -> Zone:
    """A new, empty zone of SIZE bytes (see the module docstring)."""
    if not isinstance(size, int) or size < 8192:
        raise ValueError(f"shared dict size {size} too small (at least 8k)")
    if size + z.OVERHEAD >= 1 << 32:
        raise ValueError(f"shared dict size {size} too large (under 4g)")
    if impl is None:
        impl = "c" if _c is not None and os.environ.get("PYNGX_SHDICT_PURE") != "1" else "py"
    if impl == "c" and _c is None:
        raise ValueError("the C shared dict engine is not built")
    if impl not in ("c", "py"):
        raise ValueError(f"unknown shared dict engine {impl!r}")
    return Zone(name, size, impl)


def rebuild(old: Zone, new_size: int) -> Zone:
    """A zone of NEW_SIZE with OLD's live items, most recently used first, as many as fit."""
    new = create(old.name, new_size, old.impl)
    new.rebuild(old)
    return new


def _key(key: Any) -> bytes:
    t = type(key)
    if t is str:
        kb = key.encode()
    elif t is bytes:
        kb = key
    elif t is bytearray or t is memoryview:
        kb = bytes(key)
    else:
        raise TypeError(f"key must be str or bytes, not {t.__name__}")
    if not kb:
        raise ValueError("empty key")
    if len(kb) > 65535:
        raise ValueError("key too long")
    return kb


def _number(value: Any, what: str) -> int | float:
    if type(value) is int or type(value) is float:
        return value
    raise TypeError(f"cannot convert '{what}' to a number")


def _seconds(value: Any, what: str) -> float:
    if type(value) is not int and type(value) is not float:
        raise TypeError(f'bad "{what}" argument')
    if not value >= 0:
        raise ValueError(f'bad "{what}" argument')
    return float(value)


def _flags(flags: Any) -> int:
    if type(flags) is not int:
        raise TypeError('bad "flags" argument')
    if not 0 <= flags <= 0xFFFFFFFF:
        raise ValueError('bad "flags" argument')
    return flags


class Zone:
    """One shared dict zone; every method is atomic across processes."""

    def __init__(self, name: str, size: int, impl: str) -> None:
        self.name = name
        self.size = size
        self.impl = impl
        self._r = z.Region(name, size, z.LOCK_ATOMIC if impl == "c" else z.LOCK_FCNTL, None)
        slab.format_zone(self._r)
        self._it = it_.Items(self._r)
        self._c = None
        if impl == "c":
            self._c = _c.Engine(self._r.mm, _c_support())
            self._r._c = self._c
            # the hot path straight into C: no Python frame between the caller and the engine
            for name_ in HOT:
                setattr(self, name_, getattr(self._c, name_))

    # -- the transaction every mutation runs in --
    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        r = self._r
        r.lock()
        try:
            out = fn(*args)
            r.commit()
            return out
        except BaseException:
            r.rollback()
            raise
        finally:
            r.unlock()

    # -- reads --
    def get(self, key: Any) -> Any:
        return self._run(self._get, _key(key), False)

    def get_stale(self, key: Any) -> tuple[Any, bool]:
        return self._run(self._get, _key(key), True)  # type: ignore[no-any-return]

    def _get(self, kb: bytes, stale: bool) -> Any:
        it, now = self._it, time.time()
        idx, _ = it.find(kb, key_hash(kb))
        if not idx:
            return (None, False) if stale else None
        expired = it.is_expired(idx, now)
        if expired and not stale:
            return None
        vt, raw = it.value(idx)
        if vt == T_LIST:
            raise IsAListError()
        it.touch(idx)
        value = decode(vt, raw)
        return (value, expired) if stale else value

    def get_flags(self, key: Any) -> int | None:
        return self._run(self._live_field, _key(key), 7)  # type: ignore[no-any-return]

    def _live_field(self, kb: bytes, field: int) -> Any:
        it = self._it
        idx, _ = it.find(kb, key_hash(kb))
        if not idx or it.is_expired(idx, time.time()):
            return None
        return it.head(idx)[field]

    def __contains__(self, key: Any) -> bool:
        return self._run(self._live_field, _key(key), 0) is not None

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    # -- stores --
    def set(self, key: Any, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        return self._store(SET, False, key, value, exptime, flags)

    def safe_set(self, key: Any, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        return self._store(SET, True, key, value, exptime, flags)

    def add(self, key: Any, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        return self._store(ADD, False, key, value, exptime, flags)

    def safe_add(self, key: Any, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        return self._store(ADD, True, key, value, exptime, flags)

    def replace(self, key: Any, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        return self._store(REPLACE, False, key, value, exptime, flags)

    def delete(self, key: Any) -> None:
        self._store(SET, False, key, None, 0, 0)

    def _store(self, op: int, safe: bool, key: Any, value: Any, exptime: Any, flags: Any) -> bool:
        kb, exp, fl = _key(key), _seconds(exptime, "exptime"), _flags(flags)
        vt, payload = (0, b"") if value is None else encode(value)
        return self._run(self._store_locked, op, safe, kb, vt, payload, exp, fl)  # type: ignore[no-any-return]

    def _store_locked(self, op: int, safe: bool, kb: bytes, vt: int, payload: bytes,
                      exp: float, fl: int) -> bool:
        it, now = self._it, time.time()
        it.expire_tail(1, now)
        h = key_hash(kb)
        idx, prev = it.find(kb, h)
        live = bool(idx) and not it.is_expired(idx, now)
        if op == ADD and live:
            raise KeyExistsError()
        if op == REPLACE and not live:
            raise KeyNotFoundError()
        if not vt:
            if idx:
                it.remove(idx, prev)
            return False
        return it.put(kb, h, idx, vt, payload, now + exp if exp else 0.0, fl, evict=not safe, now=now)

    def swap(self, old: Any, key: Any, value: Any) -> None:
        """Delete OLD and ``safe_add`` KEY in one step, so no other process can take the room
        OLD frees in between (the event log turns its spare into a tombstone this way).

        Raises KeyExistsError or NoMemoryError, changing nothing.
        """
        vt, payload = encode(value)
        self._run(self._swap_locked, _key(old), _key(key), vt, payload)

    def _swap_locked(self, kb_old: bytes, kb: bytes, vt: int, payload: bytes) -> None:
        it, r, now = self._it, self._r, time.time()
        h = key_hash(kb)
        idx, _ = it.find(kb, h)
        if idx and not it.is_expired(idx, now):
            raise KeyExistsError()
        oidx, oprev = it.find(kb_old, key_hash(kb_old))
        room = r.r32(z.H_NFREE) + (it.chain_len(oidx) if oidx else 0) + (it.chain_len(idx) if idx else 0)
        if room < slab.chunks_for(len(kb) + len(payload)):
            raise NoMemoryError()
        if oidx:
            it.remove(oidx, oprev)
            r.commit()  # chunks freed by a step are filled only in a later one (items.put)
        it.put(kb, h, idx, vt, payload, 0.0, 0, evict=False, now=now)

    def incr(self, key: Any, value: Any, init: Any = None, init_ttl: Any = 0) -> int | float:
        kb, value = _key(key), _number(value, "value")
        if init is not None:
            init = _number(init, "init")
        ttl = _seconds(init_ttl, "init_ttl")
        if ttl and init is None:
            raise ValueError('must provide "init" when providing "init_ttl"')
        return self._run(self._incr, kb, value, init, ttl)  # type: ignore[no-any-return]

    def _incr(self, kb: bytes, value: int | float, init: int | float | None, ttl: float) -> int | float:
        it, now = self._it, time.time()
        it.expire_tail(1, now)
        h = key_hash(kb)
        idx, prev = it.find(kb, h)
        if idx and not it.is_expired(idx, now):
            vt, raw = it.value(idx)
            if vt != T_INT and vt != T_FLOAT:
                raise NotANumberError()
            new = decode(vt, raw) + value
            if type(new) is int and not it_.INT_MIN <= new <= it_.INT_MAX:
                new = float(new)  # Lua numbers are doubles; keep going rather than fail
            nt, nraw = encode(new)
            if nt != vt:
                self._r.wbytes(it.at(idx) + it_.F_TYPE, bytes((nt,)))
            it.write_value(idx, nraw)
            it.touch(idx)
            return new
        if init is None:
            raise KeyNotFoundError()
        new = init + value
        if type(new) is int and not it_.INT_MIN <= new <= it_.INT_MAX:
            new = float(new)
        nt, nraw = encode(new)
        it.put(kb, h, idx, nt, nraw, now + ttl if ttl else 0.0, 0, evict=True, now=now)
        return new

    # -- lists --
    def lpush(self, key: Any, value: Any) -> int:
        return self._push(key, value, True)

    def rpush(self, key: Any, value: Any) -> int:
        return self._push(key, value, False)

    def _push(self, key: Any, value: Any, left: bool) -> int:
        kb = _key(key)
        if value is None:
            raise TypeError("bad value type")
        vt, payload = encode(value)
        elem = _LEL.pack(vt, len(payload)) + payload + _LHEAD.pack(len(payload))
        return self._run(self._push_locked, kb, elem, left)  # type: ignore[no-any-return]

    def _push_locked(self, kb: bytes, elem: bytes, left: bool) -> int:
        it, now = self._it, time.time()
        it.expire_tail(1, now)
        h = key_hash(kb)
        idx, prev = it.find(kb, h)
        count, body, exp, fl = 0, b"", 0.0, 0
        if idx:
            if not it.is_expired(idx, now):
                vt, raw = it.value(idx)
                if vt != T_LIST:
                    raise NotAListError()
                count, body = _LHEAD.unpack_from(raw)[0], raw[4:]
                head = it.head(idx)
                exp, fl = head[4], head[7]
        body = elem + body if left else body + elem
        it.put(kb, h, idx, T_LIST, _LHEAD.pack(count + 1) + body, exp, fl, evict=True, now=now)
        return count + 1

    def lpop(self, key: Any) -> Any:
        return self._run(self._pop, _key(key), True)

    def rpop(self, key: Any) -> Any:
        return self._run(self._pop, _key(key), False)

    def _pop(self, kb: bytes, left: bool) -> Any:
        it, now = self._it, time.time()
        h = key_hash(kb)
        idx, prev = it.find(kb, h)
        if not idx or it.is_expired(idx, now):
            return None
        vt, raw = it.value(idx)
        if vt != T_LIST:
            raise NotAListError()
        count = _LHEAD.unpack_from(raw)[0]
        # an element is type:u8 len:u32 bytes len:u32, so both ends can be read directly
        if left:
            et, n = _LEL.unpack_from(raw, 4)
            value, body = raw[9:9 + n], raw[13 + n:]
        else:
            end = len(raw) - 4
            n, = _LHEAD.unpack_from(raw, end)
            et, value, body = raw[end - n - 5], raw[end - n:end], raw[4:end - n - 5]
        head = it.head(idx)
        if count > 1:
            it.put(kb, h, idx, T_LIST, _LHEAD.pack(count - 1) + body, head[4], head[7], evict=False, now=now)
        else:
            it.remove(idx, prev)
        return decode(et, value)

    def llen(self, key: Any) -> int:
        return self._run(self._llen, _key(key))  # type: ignore[no-any-return]

    def _llen(self, kb: bytes) -> int:
        it = self._it
        idx, _ = it.find(kb, key_hash(kb))
        if not idx or it.is_expired(idx, time.time()):
            return 0
        vt, raw = it.value(idx)
        if vt != T_LIST:
            raise NotAListError()
        return _LHEAD.unpack_from(raw)[0]  # type: ignore[no-any-return]

    # -- expiry --
    def ttl(self, key: Any) -> float:
        return self._run(self._ttl, _key(key))  # type: ignore[no-any-return]

    def _ttl(self, kb: bytes) -> float:
        it, now = self._it, time.time()
        idx, _ = it.find(kb, key_hash(kb))
        if not idx or it.is_expired(idx, now):
            raise KeyNotFoundError()
        exp = it.expires(idx)
        return 0.0 if exp == 0.0 else exp - now

    def expire(self, key: Any, exptime: float) -> None:
        self._run(self._expire, _key(key), _seconds(exptime, "exptime"))

    def _expire(self, kb: bytes, exp: float) -> None:
        it, now = self._it, time.time()
        idx, _ = it.find(kb, key_hash(kb))
        if not idx or it.is_expired(idx, now):
            raise KeyNotFoundError()
        it.set_expires(idx, now + exp if exp else 0.0)

    def flush_all(self) -> None:
        """Mark every item expired (get_stale still sees them until they are evicted)."""
        walk.flush_all(self)

    def flush_expired(self, max_count: int = 0) -> int:
        """Free expired items (all when MAX_COUNT is 0); returns how many."""
        if type(max_count) is not int or max_count < 0:
            raise ValueError('bad "max_count" argument')
        return walk.flush_expired(self, max_count)

    def get_keys(self, max_count: int = 1024) -> list[str | bytes]:
        """Live keys, most recently used first; at most MAX_COUNT (0 = all)."""
        if type(max_count) is not int or max_count < 0:
            raise ValueError('bad "max_count" argument')
        return walk.get_keys(self, max_count)

    # -- the zone --
    def capacity(self) -> int:
        return self.size

    def free_space(self) -> int:
        return self._r.r32(z.H_NFREE) * slab.CHUNK

    def force_unlock(self, pid: int) -> bool:
        return self._r.force_unlock(pid)

    def statistics(self) -> dict[str, Any]:
        return walk.statistics(self)

    def check(self) -> None:
        walk.check(self)

    def save(self, path: str) -> None:
        walk.save(self, path)

    def load(self, path: str) -> int:
        return walk.load(self, path)

    def rebuild(self, old: Zone, new_size: int | None = None) -> int:
        """Copy OLD's live items into this (new, empty) zone, MRU first; returns items copied."""
        return walk.copy_from(self, old)

    def close(self) -> None:
        for name_ in HOT:
            self.__dict__.pop(name_, None)
        if self._c is not None:
            self._c.release()  # bound methods handed out stay callable and raise ValueError
        self._c = None
        self._r.close()


def _c_support() -> tuple[Any, ...]:
    """What the C engine needs from Python: error classes and msgpack."""
    import msgpack

    from pyngx import errors

    def unpack(raw: bytes) -> Any:
        return msgpack.unpackb(raw, strict_map_key=False)

    return (errors.NoMemoryError, errors.KeyExistsError, errors.KeyNotFoundError,
            errors.NotANumberError, errors.IsAListError, msgpack.packb, unpack, _key, encode,
            errors.NotAListError)
