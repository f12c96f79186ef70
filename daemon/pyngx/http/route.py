"""What a location does, prepared once at start: its handler, sets, return.

Owns turning a `LocationConf` into a `Route` (the content handler made from
its chunk, ``set`` templates compiled, the Content-Type line rendered) and a
listening address's servers into a `Vhosts` that picks one by ``Host``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from types import CodeType
from typing import Any

from pyngx.conf.model import Chunk, HttpConf, LocationConf, ServerConf
from pyngx.http.location import Locations
from pyngx.http.static import Files
from pyngx.http.variables import Template
from pyngx.runtime import usercode

CONTENT, RETURN, STATUS, NONE, STATIC = "content", "return", "status", "none", "static"
PHASED = "phased"  # a location with rewrite/access/filter/log phases: pyngx.http.phases runs it
REDIRECTS = frozenset((301, 302, 303, 307, 308))


class Route:
    """One location, ready to answer."""

    __slots__ = ("conf", "kind", "handler", "is_async", "sets", "ret_code", "ret_text", "ctype", "max_body", "name",
                 "files",
                 # the phases besides content: (function, is_async) or None; ``inner`` is what the location
                 # does (CONTENT, RETURN...) when ``kind`` is PHASED; ``yields``: a phase may await
                 "inner", "rewrite", "access", "header_filter", "body_filter", "log", "yields", "streams",
                 # a plain content handler and nothing else to run: the C path may call it (pyngx.http._fast);
                 # ``quick``: the common phased location (rewrite and/or access, a content handler, a log
                 # phase, none awaiting; no set or filter), which the C path runs too
                 "plain", "quick")

    def __init__(self, conf: LocationConf, namespace: dict[str, Any]) -> None:
        self.conf = conf
        self.name = f"{conf.modifier} {conf.pattern}".strip()
        self.sets = tuple((s.name.lstrip("$"), Template(s.value)) for s in conf.sets)
        self.ctype = f"Content-Type: {conf.default_type}\r\n".encode("latin-1")
        self.max_body = conf.client_max_body_size or (1 << 62)  # 0: unlimited, as nginx
        self.handler: Callable[[], Any] | None = None
        self.is_async = False
        self.ret_code = 0
        self.ret_text: Template | None = None
        self.files = Files(conf.static, conf.default_type) if conf.static is not None else None
        if conf.ret is not None:
            self.kind = RETURN
            self.ret_code = conf.ret.code
            self.ret_text = Template(conf.ret.text) if conf.ret.text is not None else None
        elif conf.status:
            self.kind = STATUS
        elif conf.content is not None:
            self.kind = CONTENT
            self.handler = usercode.make_handler(conf.content, namespace)
            self.is_async = conf.content.is_async
        elif self.files is not None:
            self.kind = STATIC
        else:
            self.kind = NONE
        self.inner = self.kind
        self.rewrite = _step(conf.rewrite, namespace)
        self.access = _step(conf.access, namespace)
        self.header_filter = _step(conf.header_filter, namespace)
        self.body_filter = _step(conf.body_filter, namespace)
        self.log = _step(conf.log, namespace)
        if self.rewrite or self.access or self.header_filter or self.body_filter or self.log:
            self.kind = PHASED
        self.yields = any(step is not None and step[1] for step in (self.rewrite, self.access)) or self.is_async
        # a location whose Python streams the body starts before it arrives (pyngx.http.bodystream)
        self.streams = self.yields and wants_stream(*(c.code for c in (conf.rewrite, conf.access, conf.content) if c))
        self.plain = (self.kind is CONTENT and not self.is_async and not self.sets
                      and not (self.files is not None and self.files.tries))
        self.quick = (self.kind is PHASED and not self.yields and self.inner is CONTENT and self.handler is not None
                      and self.header_filter is None and self.body_filter is None and not self.sets)


def wants_stream(*codes: CodeType) -> bool:
    """Whether the code (functions inside included) names ``stream`` on ``req``."""
    todo = list(codes)
    while todo:
        code = todo.pop()
        if "stream" in code.co_names and "req" in code.co_names:
            return True
        todo.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return False


def _step(chunk: Chunk | None, namespace: dict[str, Any]) -> tuple[Callable[[], Any], bool] | None:
    """A phase's handler made once, with whether it is a coroutine function."""
    if chunk is None:
        return None
    return usercode.make_handler(chunk, namespace), chunk.is_async


class Server:
    """One ``server {}``: its names and its locations."""

    __slots__ = ("conf", "server_names", "locations", "targets", "named", "fallback")

    def __init__(self, conf: ServerConf, namespace: dict[str, Any]) -> None:
        self.conf = conf
        self.server_names = conf.server_names
        routes = [(loc, Route(loc, namespace)) for loc in conf.locations]
        self.locations: Locations[Route] = Locations([(c, r) for c, r in routes if not c.pattern.startswith("@")])
        self.named = {c.pattern: r for c, r in routes if c.pattern.startswith("@")}  # try_files' @NAME
        self.fallback = Route(conf.fallback, namespace) if conf.fallback is not None else None
        # raw request target -> (uri, args, route, match), filled by the connections
        self.targets: dict[bytes, tuple[str, str, Route | None, Any]] = {}

    def find(self, uri: str) -> tuple[Route | None, Any]:
        """The location for URI and its regex match; no match is the server's own files, if any (nginx)."""
        route, match = self.locations.find(uri)
        return (route, match) if route is not None else (self.fallback, None)


class Vhosts:
    """The servers on one listening address; the first is the default (nginx without default_server)."""

    __slots__ = ("servers", "default", "only", "exact", "wild")

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers = tuple(servers)
        self.default = self.servers[0]
        self.only = self.default if len(self.servers) == 1 else None
        self.exact: dict[str, Server] = {}
        self.wild: list[tuple[str, Server]] = []
        for server in self.servers:
            for name in server.server_names:
                name = name.lower()
                if name.startswith("*.") or name.startswith(".") or name.endswith(".*"):
                    self.wild.append((name, server))
                elif name and name not in self.exact:
                    self.exact[name] = server

    def find(self, host: bytes | None) -> Server:
        """The server for a Host header value (the default when none matches)."""
        if self.only is not None or not host:
            return self.default
        name = host.decode("latin-1").lower()
        if not name.startswith("["):
            name = name.rsplit(":", 1)[0]
        name = name.rstrip(".")
        server = self.exact.get(name)
        if server is not None:
            return server
        for pattern, candidate in self.wild:
            if _wild_match(pattern, name):
                return candidate
        return self.default


def _wild_match(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    if pattern.startswith("."):
        return name == pattern[1:] or name.endswith(pattern)
    return name.startswith(pattern[:-1])


def build(http: HttpConf, namespace: dict[str, Any]) -> dict[tuple[str, int], Vhosts]:
    """Listen key → its servers, every location's handler made once."""
    by_key: dict[tuple[str, int], list[Server]] = {}
    for conf in http.servers:
        server = Server(conf, namespace)
        for listen in conf.listens:
            group = by_key.setdefault(listen.key, [])
            if server not in group:
                group.append(server)
    return {key: Vhosts(servers) for key, servers in by_key.items()}
