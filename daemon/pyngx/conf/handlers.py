"""What each directive stores: the handlers the table in directives.py points at.

A handler gets the block being filled (`Ctx`) and its statement, whose context and
argument count are already checked. It returns the parsed value, which the framework
stores where the directive's row says (a row's ``to``; a handler never names a key), or
a new `Ctx` for a block directive, and raises `Invalid` for a bad value. A directive that
may repeat reads what it gathered so far with ``ctx.current(st, EMPTY)``. Plain
one-argument values use a parser instead (a row's ``parse``; see `values`). No file I/O
here except reading ``*_by_python_file`` through the loader.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pyngx import log
from pyngx.conf import values
from pyngx.conf.model import (AccessLog, Chunk, ChunkKind, ErrorLogConf, Listen, Return, SetVar, ShdictSpec,
                              ThreadPoolSpec, UserConf)
from pyngx.conf.parse import Stmt
from pyngx.conf.values import Invalid

# Contexts (where a directive may appear), as bits.
MAIN, EVENTS, HTTP, SERVER, LOCATION = 1, 2, 4, 8, 16
ANY = MAIN | EVENTS | HTTP | SERVER | LOCATION
SHDICT_MIN, SHDICT_MAX = 8192, 4 << 30


class Loader(Protocol):
    """What handlers need from the load in progress."""

    prefix: str

    def path(self, text: str) -> str: ...
    def compile_block(self, st: Stmt, kind: ChunkKind) -> Chunk: ...
    def compile_file(self, st: Stmt, kind: ChunkKind) -> Chunk: ...


@dataclass(slots=True)
class Ctx:
    """A block being filled: main, events, http, server or location."""

    kind: int
    stmt: Stmt | None
    loader: Loader
    parent: Ctx | None = None
    values: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, Stmt] = field(default_factory=dict)  # directive slot → where it was set
    # a location: how it matches (set by the "location" handler); a server: the URIs its locations name
    modifier: str = ""
    pattern: str = ""
    regex: re.Pattern[str] | None = None
    location_keys: set[tuple[bool, str]] = field(default_factory=set)
    children: list[Ctx] = field(default_factory=list)

    def open(self, kind: int, st: Stmt) -> Ctx:
        """A new inner block of KIND opened by ST."""
        inner = Ctx(kind, st, self.loader, self)
        self.children.append(inner)
        return inner

    # directive name -> the key its value is stored under (its row's target field), set by directives.py
    keys: ClassVar[dict[str, str]] = {}

    def current(self, st: Stmt, empty: Any) -> Any:
        """The value ST's directive has gathered in this block so far (EMPTY: none yet)."""
        return self.values.get(self.keys[st.name], empty)

    def has(self, name: str) -> bool:
        """Whether directive NAME was set in this block."""
        return self.keys[name] in self.values

    def inherited(self, key: str, default: Any) -> Any:
        """The value of KEY here or in the nearest enclosing block."""
        ctx: Ctx | None = self
        while ctx is not None:
            if key in ctx.values:
                return ctx.values[key]
            ctx = ctx.parent
        return default


# -- main --

def processes(text: str) -> int:
    """``N`` or ``auto`` (one per CPU)."""
    return (os.cpu_count() or 1) if text == "auto" else values.number(text, 1)


def worker_max_requests(ctx: Ctx, st: Stmt) -> tuple[int, int]:
    jitter = 0
    if len(st.args) > 1:
        key, sep, value = st.args[1].partition("=")
        if key != "jitter" or not sep:
            raise Invalid(f'invalid parameter "{st.args[1]}"')
        jitter = values.number(value)
    return (values.number(st.args[0]), jitter)


def pid(ctx: Ctx, st: Stmt) -> str:
    return ctx.loader.path(st.args[0])


def error_log(ctx: Ctx, st: Stmt) -> ErrorLogConf:
    target = st.args[0]
    level_name = st.args[1] if len(st.args) > 1 else "error"
    level = log.LEVELS.get(level_name, 0)
    if not level:  # 0 is "stderr", not a level a user may name
        raise Invalid(f'invalid log level "{level_name}"', whole=True)
    return ErrorLogConf(None if target == "stderr" else ctx.loader.path(target), level)


def user(ctx: Ctx, st: Stmt) -> UserConf:
    return UserConf(st.args[0], st.args[1] if len(st.args) > 1 else None)


def thread_pool(ctx: Ctx, st: Stmt) -> tuple[ThreadPoolSpec, ...]:
    """``thread_pool NAME [threads=N] [max_queue=M];`` (nginx ``ngx_thread_pool``)."""
    name = st.args[0]
    spec = ThreadPoolSpec(name)  # the model's defaults: nginx's
    params = {"threads": spec.threads, "max_queue": spec.max_queue}
    for arg in st.args[1:]:
        key, eq, text = arg.partition("=")
        if key not in params or not eq:
            raise Invalid(f'invalid parameter "{arg}"')
        params[key] = values.number(text, 1 if key == "threads" else 0)
    pools: tuple[ThreadPoolSpec, ...] = ctx.current(st, ())
    first = next((pool for pool in pools if pool.name == name), None)
    if first is not None:
        raise Invalid(f'duplicate thread pool "{name}", first declared in {first.file}:{first.line}', whole=True)
    return (*pools, ThreadPoolSpec(name, params["threads"], params["max_queue"], st.file, st.line))


def stall_time(text: str) -> float | None:
    """A time (seconds) above 0, or ``off`` (None)."""
    seconds = None if text == "off" else values.time(text)
    if seconds is not None and seconds <= 0:
        raise Invalid(f'invalid value "{text}"')
    return seconds


def events(ctx: Ctx, st: Stmt) -> Ctx:
    inner = ctx.open(EVENTS, st)
    inner.values = ctx.values  # its settings are the main block's (Config's fields)
    return inner


def include(ctx: Ctx, st: Stmt) -> None:
    """Never called: the parser replaces include by the files' statements."""


def http(ctx: Ctx, st: Stmt) -> Ctx:
    return ctx.open(HTTP, st)


# -- http --

def python_path(ctx: Ctx, st: Stmt) -> tuple[str, ...]:
    return (*ctx.current(st, ()), *(ctx.loader.path(p) for p in st.args))


def python_shared_dict(ctx: Ctx, st: Stmt) -> tuple[ShdictSpec, ...]:
    name = st.args[0]
    size = values.size(st.args[1])
    if not SHDICT_MIN <= size < SHDICT_MAX:  # lua-nginx-module's words and lower bound; the zone is 32-bit
        raise Invalid(f'invalid python shared dict size "{st.args[1]}"', whole=True)
    persist = None
    if len(st.args) > 2:
        key, eq, path = st.args[2].partition("=")
        if key != "persist" or not eq or not path:
            raise Invalid(f'invalid parameter "{st.args[2]}"')
        persist = ctx.loader.path(path)
    shdicts: tuple[ShdictSpec, ...] = ctx.current(st, ())
    first = next((spec for spec in shdicts if spec.name == name), None)
    if first is not None:
        raise Invalid(f'duplicate shared dict "{name}", first declared in {first.file}:{first.line}', whole=True)
    return (*shdicts, ShdictSpec(name, size, persist, st.file, st.line))


def module_block(ctx: Ctx, st: Stmt) -> Chunk:
    return ctx.loader.compile_block(st, "module")


def module_file(ctx: Ctx, st: Stmt) -> Chunk:
    return ctx.loader.compile_file(st, "module")


def access_log(ctx: Ctx, st: Stmt) -> AccessLog:
    target = st.args[0]
    if len(st.args) > 1 and st.args[1] != "combined":
        raise Invalid(f'unknown log format "{st.args[1]}"', whole=True)
    return AccessLog(None if target == "off" else ctx.loader.path(target))


def server(ctx: Ctx, st: Stmt) -> Ctx:
    return ctx.open(SERVER, st)


# -- server --

def parse_address(text: str) -> tuple[str, int]:
    """``8080``, ``127.0.0.1:8080``, ``*:8080``, ``[::1]:8080``, ``localhost:80`` → (addr, port)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise Invalid(f'invalid host in "{text}" of the "listen" directive', whole=True)
        port_text = rest[1:] if rest else "80"
    elif text.isascii() and text.isdigit():
        host, port_text = "*", text
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, "80"
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise Invalid(f'invalid port in "{text}" of the "listen" directive', whole=True)
    host = {"*": "0.0.0.0", "": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(f'host not found in "{text}" of the "listen" directive', whole=True) from None
    return host, int(port_text)


def listen(ctx: Ctx, st: Stmt) -> tuple[Listen, ...]:
    addr, port = parse_address(st.args[0])
    reuseport = False
    for param in st.args[1:]:
        if param == "reuseport":
            reuseport = True
        elif param != "default_server":  # accepted for nginx configs; there is one server per port anyway
            raise Invalid(f'invalid parameter "{param}"')
    listens: tuple[Listen, ...] = ctx.current(st, ())
    if any(ls.key == (addr, port) for ls in listens):
        shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        raise Invalid(f"a duplicate listen {shown}", whole=True)
    return (*listens, Listen(addr, port, reuseport, st.file, st.line))


def server_name(ctx: Ctx, st: Stmt) -> tuple[str, ...]:
    return (*ctx.current(st, ()), *st.args)


_MODIFIERS = ("=", "^~", "~*", "~")


def location(ctx: Ctx, st: Stmt) -> Ctx:
    if len(st.args) == 2:
        modifier, pattern = st.args
        if modifier not in _MODIFIERS:
            raise Invalid(f'invalid location modifier "{modifier}"', whole=True)
    else:  # nginx also reads a modifier glued to the pattern: "=/x", "~\.py$"
        arg = st.args[0]
        modifier = next((m for m in _MODIFIERS if arg.startswith(m) and len(arg) > len(m)), "")
        pattern = arg[len(modifier):]
    regex = None
    if modifier in ("~", "~*"):
        try:
            # PCRE's named group (?<name>...) is Python's (?P<name>...); nginx accepts both
            python_pattern = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)
            regex = re.compile(python_pattern, re.IGNORECASE if modifier == "~*" else 0)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise Invalid(f're.compile() failed: {exc} in "{pattern}"', whole=True) from None
    else:  # "=" and prefixes (plain or ^~) each may name a URI once per server
        key = (modifier == "=", pattern)
        taken = ctx.location_keys
        if key in taken:
            raise Invalid(f'duplicate location "{pattern}"', whole=True)
        taken.add(key)
    inner = ctx.open(LOCATION, st)
    inner.modifier, inner.pattern, inner.regex = modifier, pattern, regex
    return inner


# -- location --

def set_var(ctx: Ctx, st: Stmt) -> tuple[SetVar, ...]:
    name, value = st.args
    if len(name) < 2 or not name.startswith("$"):
        raise Invalid(f'invalid variable name "{name}"', whole=True)
    return (*ctx.current(st, ()), SetVar(name[1:], value))


_REDIRECTS = (301, 302, 303, 307, 308)


def return_(ctx: Ctx, st: Stmt) -> Return:
    first = st.args[0]
    if first.isdigit() and first.isascii():
        code = int(first)
        if code > 999:
            raise Invalid(f'invalid return code "{first}"', whole=True)
        return Return(code, st.args[1] if len(st.args) > 1 else None)
    elif len(st.args) == 1 and first.startswith(("http://", "https://", "$scheme")):
        return Return(302, first)  # nginx: "return URL;" is a 302
    raise Invalid(f'invalid return code "{first}"', whole=True)


def status(ctx: Ctx, st: Stmt) -> bool:
    return True


# -- the request phases (http, server, location; inherited inwards) and exit_worker --

# Phases that run inside nginx's output or after the answer: OpenResty refuses every API that
# yields there (lua-nginx-module README, "header_filter_by_lua"), so a block may not await.
NO_AWAIT = frozenset(("header_filter", "body_filter", "log", "exit_worker"))


def phase_chunk(key: str, kind: ChunkKind, from_file: bool) -> Any:
    """A handler compiling the block (or file) of phase KEY (its row says where the Chunk goes)."""
    def handler(ctx: Ctx, st: Stmt) -> Chunk:
        chunk = ctx.loader.compile_file(st, kind) if from_file else ctx.loader.compile_block(st, kind)
        if chunk.is_async and key in NO_AWAIT:
            raise Invalid(f'Python of "{st.name}" may not await (nothing may yield in {key}_by_python)', whole=True)
        return chunk
    handler.__name__ = f"{key}_{'file' if from_file else 'block'}"
    return handler
