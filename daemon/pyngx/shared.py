"""``ngx.shared``: the shared dict zones declared with ``python_shared_dict NAME SIZE;``.

``ngx.shared.NAME`` and ``ngx.shared["NAME"]`` give a SharedDict, OpenResty's
ngx.shared.DICT API (see docs/shared-dicts.md). The zone engine
(pyngx.shm.shdict) checks arguments and raises pyngx.errors; this facade finds
the zone of the current generation and, for the hot methods, hands out the
engine's own bound methods so a call costs no extra Python frame.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyngx.errors import Error
from pyngx.http import native
from pyngx.runtime import core
from pyngx.shm.shdict import HOT as _HOT  # the methods the engine runs without a Python frame

__all__ = ["shared", "Shared", "SharedDict"]

_CHECKED = frozenset(("add", "safe_add", "replace"))


class SharedDict:
    """One zone, as user code sees it; every method is atomic across all processes."""

    def __init__(self, name: str, zone: Any) -> None:
        self._name = name
        self._zone = zone
        for attr in _HOT:
            # shadow the delegating methods below with the engine's (C when built); add, safe_add
            # and replace keep theirs, which refuse None first (the engine would store a delete)
            if attr not in _CHECKED:
                setattr(self, attr, getattr(zone, attr))

    def __repr__(self) -> str:
        return f"<pyngx.SharedDict {self._name!r}>"

    # reads
    def get(self, key: str | bytes) -> Any:
        """The value, or None when missing or expired. Raises IsAListError on a list."""
        return self._zone.get(key)

    def get_stale(self, key: str | bytes) -> tuple[Any, bool]:
        """(value, stale): an expired value not yet evicted comes back with stale=True."""
        return self._zone.get_stale(key)  # type: ignore[no-any-return]

    def get_flags(self, key: str | bytes) -> int | None:
        """The user flags stored with KEY (0 when set without); None when missing."""
        return self._zone.get_flags(key)  # type: ignore[no-any-return]

    # writes
    def set(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Store VALUE (None deletes); returns forcible (valid items were evicted to make room)."""
        return self._zone.set(key, value, exptime, flags)  # type: ignore[no-any-return]

    def safe_set(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Like set, never evicts. Raises NoMemoryError."""
        return self._zone.safe_set(key, value, exptime, flags)  # type: ignore[no-any-return]

    def add(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Store only if missing or expired. Raises KeyExistsError."""
        _not_none(value)
        return self._zone.add(key, value, exptime, flags)  # type: ignore[no-any-return]

    def safe_add(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Like add, never evicts. Raises KeyExistsError, NoMemoryError."""
        _not_none(value)
        return self._zone.safe_add(key, value, exptime, flags)  # type: ignore[no-any-return]

    def replace(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Store only if present and live. Raises KeyNotFoundError."""
        _not_none(value)
        return self._zone.replace(key, value, exptime, flags)  # type: ignore[no-any-return]

    def delete(self, key: str | bytes) -> None:
        """Remove KEY (nothing happens when it is missing)."""
        self._zone.delete(key)

    def incr(self, key: str | bytes, value: int | float, init: int | float | None = None,
             init_ttl: float = 0) -> int | float:
        """Add VALUE; returns the new number. Raises KeyNotFoundError, NotANumberError."""
        return self._zone.incr(key, value, init, init_ttl)  # type: ignore[no-any-return]

    # lists
    def lpush(self, key: str | bytes, value: Any) -> int:
        """Push VALUE at the head of list KEY (made when missing); returns its length. Raises NotAListError."""
        return self._zone.lpush(key, value)  # type: ignore[no-any-return]

    def rpush(self, key: str | bytes, value: Any) -> int:
        """Push VALUE at the tail of list KEY (made when missing); returns its length. Raises NotAListError."""
        return self._zone.rpush(key, value)  # type: ignore[no-any-return]

    def lpop(self, key: str | bytes) -> Any:
        """Remove and return the head of list KEY; None when missing or empty. Raises NotAListError."""
        return self._zone.lpop(key)

    def rpop(self, key: str | bytes) -> Any:
        """Remove and return the tail of list KEY; None when missing or empty. Raises NotAListError."""
        return self._zone.rpop(key)

    def llen(self, key: str | bytes) -> int:
        """The length of list KEY (0 when missing). Raises NotAListError."""
        return self._zone.llen(key)  # type: ignore[no-any-return]

    # expiry and the zone
    def ttl(self, key: str | bytes) -> float:
        """Seconds left (0 = never expires). Raises KeyNotFoundError."""
        return self._zone.ttl(key)  # type: ignore[no-any-return]

    def expire(self, key: str | bytes, exptime: float) -> None:
        """Set a new expiry (0 = never). Raises KeyNotFoundError."""
        self._zone.expire(key, exptime)

    def flush_all(self) -> None:
        """Mark every item expired (flush_expired frees their memory)."""
        self._zone.flush_all()

    def flush_expired(self, max_count: int = 0) -> int:
        """Free up to MAX_COUNT expired items (0: all); returns how many."""
        return self._zone.flush_expired(max_count)  # type: ignore[no-any-return]

    def get_keys(self, max_count: int = 1024) -> list[str | bytes]:
        """Up to MAX_COUNT live keys (0: all), str where they are UTF-8."""
        return self._zone.get_keys(max_count)  # type: ignore[no-any-return]

    def capacity(self) -> int:
        """The zone's size in bytes, as declared by python_shared_dict."""
        return self._zone.capacity()  # type: ignore[no-any-return]

    def free_space(self) -> int:
        """Bytes free in the zone (items may still be stored in partly used pages)."""
        return self._zone.free_space()  # type: ignore[no-any-return]

    # Python niceties (exact and cheap; len() is neither, expired items linger)
    def __contains__(self, key: str | bytes) -> bool:
        return key in self._zone

    def __getitem__(self, key: str | bytes) -> Any:
        """``d[key]``: like get, but raises KeyError when KEY is missing or expired."""
        value = self._zone.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str | bytes, value: Any) -> None:
        self._zone.set(key, value)

    def __delitem__(self, key: str | bytes) -> None:
        self._zone.delete(key)


_fast = native.load()
if _fast is not None:
    _SharedBase: Any = _fast.SharedBase  # ngx.shared.NAME in C while NAME's zone is the one wrapped
else:
    class _SharedBase:
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            return object.__getattribute__(self, "_attr")(name)


class Shared(_SharedBase):
    """``ngx.shared``: zones by attribute or item; unknown names raise AttributeError / KeyError."""

    # ``ngx.shared.NAME`` never goes through __getattr__: that fallback costs a failed lookup and
    # its AttributeError on every read (about 0.6 µs on CPython 3.11). With the C extension a zone
    # wrapped before is returned from C; every other name comes to ``_attr``.
    __slots__ = ()

    def _attr(self, name: str) -> Any:
        if name[:1] == "_":
            try:
                return object.__getattribute__(self, name)
            except AttributeError:
                pass
        sd = _lookup(name)
        if sd is None:
            raise AttributeError(f'no shared dict "{name}"')
        return sd

    def __getitem__(self, name: str) -> SharedDict:
        """``ngx.shared["name"]``: the shared dict NAME. Raises KeyError when none is declared."""
        sd = _lookup(name)
        if sd is None:
            raise KeyError(name)
        return sd

    def __contains__(self, name: object) -> bool:
        return name in core.RT.shdicts

    def __iter__(self) -> Iterator[str]:
        return iter(list(core.RT.shdicts))

    def __len__(self) -> int:
        return len(core.RT.shdicts)

    def __repr__(self) -> str:
        return f"<pyngx.shared {sorted(core.RT.shdicts)}>"


# the zone each SharedDict wraps, by name: a new generation's zone is wrapped once
_WRAPPED: dict[str, tuple[Any, SharedDict]] = {}


def _lookup(name: str) -> SharedDict | None:
    zone = core.RT.shdicts.get(name)
    hit = _WRAPPED.get(name)
    if hit is not None and hit[0] is zone:
        return hit[1]
    if zone is None:
        return None
    sd = SharedDict(name, zone)
    _WRAPPED[name] = (zone, sd)
    return sd


shared = Shared()
if _fast is not None:
    _fast.setup_shared(_WRAPPED, core)


def _not_none(value: Any) -> None:
    """add/safe_add/replace store a value; None is not one (lua-nginx-module ngx_http_lua_shdict.c)."""
    if value is None:
        raise Error("attempt to add or replace nil values")
