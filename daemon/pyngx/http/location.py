"""Which location of a server answers a URI, in nginx's order.

Owns the match order of ``ngx_http_core_find_location``: an ``=`` exact match
ends the search; otherwise the longest matching prefix is remembered, and if
it is ``^~`` the search ends there; otherwise regexes (``~``, ``~*``) are
tried in config order and the first that matches wins; otherwise the longest
prefix answers; nothing matching is a 404. Knows nothing of sockets or of
what a location does: it maps a URI to an opaque route object.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

from pyngx.conf.model import LocationConf

R = TypeVar("R")
CACHE_SIZE = 4096  # distinct URIs remembered per server
CACHED_LEN = 256  # longer URIs are searched every time: 4096 URIs of 8k would hold 32 MB per worker


class Locations(Generic[R]):
    """The locations of one server, each paired with the route it answers with."""

    __slots__ = ("exact", "prefixes", "regexes", "cache")

    def __init__(self, items: Sequence[tuple[LocationConf, R]]) -> None:
        self.exact: dict[str, R] = {}
        prefixes: list[tuple[str, bool, R]] = []
        self.regexes: list[tuple[re.Pattern[str], R]] = []
        for conf, route in items:
            if conf.modifier == "=":
                self.exact.setdefault(conf.pattern, route)
            elif conf.modifier in ("~", "~*"):
                rx = conf.regex if conf.regex is not None else _compile(conf)
                self.regexes.append((rx, route))
            else:
                prefixes.append((conf.pattern, conf.modifier == "^~", route))
        # Longest first, so the first prefix that matches is the longest one;
        # sorted() is stable, so among equal patterns the first in the config wins.
        self.prefixes = tuple(sorted(prefixes, key=lambda p: -len(p[0])))
        # URI -> (route, match): the search result, bounded.
        self.cache: dict[str, tuple[R | None, re.Match[str] | None]] = {}

    def find(self, uri: str) -> tuple[R | None, re.Match[str] | None]:
        """The route for URI and the regex match (for $1...), or (None, None) for a 404."""
        hit = self.cache.get(uri)
        if hit is not None:
            return hit
        found = self._search(uri)
        # A Match object is immutable, so answers with captures are cached too.
        if len(uri) <= CACHED_LEN:
            if len(self.cache) >= CACHE_SIZE:
                self.cache.clear()
            self.cache[uri] = found
        return found

    def _search(self, uri: str) -> tuple[R | None, re.Match[str] | None]:
        route = self.exact.get(uri)
        if route is not None:
            return route, None
        best: R | None = None
        for pattern, stop, candidate in self.prefixes:
            if uri.startswith(pattern):
                if stop:
                    return candidate, None
                best = candidate
                break
        for rx, candidate in self.regexes:
            m = rx.search(uri)
            if m is not None:
                return candidate, m
        return best, None


def _compile(conf: LocationConf) -> re.Pattern[str]:
    return re.compile(conf.pattern, re.IGNORECASE if conf.modifier == "~*" else 0)
