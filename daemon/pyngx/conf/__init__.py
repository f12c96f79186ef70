"""Config text → `Config`: the frozen tree every later stage consumes.

Pure: reads the config files (and ``*_by_python_file`` files), compiles Python;
no sockets, no fork, no logging. ``load`` raises `ConfError` for every mistake a
user can make, never another exception.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from pyngx.conf import cluster, directives, parse
from pyngx.conf import static as static_conf
from pyngx.conf.handlers import EVENTS, HTTP, LOCATION, MAIN, SERVER, Ctx
from pyngx.conf.model import (AccessLog, Chunk, ChunkKind, Config, ErrorLogConf, HttpConf, Listen, LocationConf,
                              ServerConf, ThreadPoolSpec)
from pyngx.conf.parse import ConfError as ConfError
from pyngx.conf.parse import Stmt
from pyngx.conf.pycode import compile_chunk

ConfError.__module__ = "pyngx.conf"
COMMAND_LINE = "command line"
_DEFAULT_LEVEL = 4  # error
REQUEST_PHASES = ("rewrite", "access", "header_filter", "body_filter", "log")  # besides content


class _Loader:
    """The load in progress: prefix, files read, Python compiled."""

    def __init__(self, prefix: str, files: list[str]) -> None:
        self.prefix = prefix
        self.files = files

    def path(self, text: str) -> str:
        return directives.resolve(self.prefix, text)

    def compile_block(self, st: Stmt, kind: ChunkKind) -> Chunk:
        assert st.code is not None
        return self._compile(st.code, st.path or st.file, st.file, st.code_line, kind)

    def compile_file(self, st: Stmt, kind: ChunkKind) -> Chunk:
        path = self.path(st.args[0])
        shown = parse.display_path(path)
        self.files.append(path)
        source = parse.read_file(path, shown, (st.file, st.line))
        return self._compile(source, path, shown, 1, kind)

    @staticmethod
    def _compile(source: str, filename: str, shown: str, line: int, kind: ChunkKind) -> Chunk:
        try:
            return compile_chunk(source, filename, line, kind)
        except SyntaxError as exc:
            raise ConfError(f"{type(exc).__name__}: {exc.msg}", shown, exc.lineno or line) from None
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            raise ConfError(f"invalid Python: {exc}", shown, line) from None


def load(path: str, prefix: str, extra: Sequence[str] = ()) -> Config:
    """Read the config at PATH (relative: under PREFIX), with the -g directives EXTRA.

    Raises ConfError.
    """
    prefix = os.path.abspath(prefix or ".")
    main_path = os.path.normpath(os.path.join(prefix, path))
    files: list[str] = []
    stmts = parse.parse_file(main_path, files)
    extra_stmts = [_command_line(st) for text in extra for st in _parse_extra(text)]
    for st in extra_stmts:
        if st.name == "include":
            raise ConfError('"include" directive is not allowed here', COMMAND_LINE, 0)
    loader = _Loader(prefix, files)
    main = Ctx(MAIN, None, loader)
    for st in stmts:
        directives.apply(main, st)
    for st in extra_stmts:  # -g wins over the file (nginx would call the pair a duplicate)
        directives.apply(main, st, override=True)
    return _freeze(main, main_path, prefix, files)


def dump(path: str, prefix: str) -> str:
    """``pyngx -T``: every config file read, as nginx prints them. Raises ConfError."""
    prefix = os.path.abspath(prefix or ".")
    files: list[str] = []
    parse.parse_file(os.path.normpath(os.path.join(prefix, path)), files)
    out = []
    for file in dict.fromkeys(files):
        text = parse.read_file(file, parse.display_path(file), (COMMAND_LINE, 0))
        out.append(f"# configuration file {file}:\n{text}")
        if not text.endswith("\n"):
            out.append("\n")
        out.append("\n")
    return "".join(out)


def _parse_extra(text: str) -> list[Stmt]:
    try:
        return parse.parse_text(text, COMMAND_LINE)
    except ConfError as exc:
        raise ConfError(exc.message, COMMAND_LINE, 0) from None


def _command_line(st: Stmt) -> Stmt:
    """A -g statement: errors in it say "in command line", as nginx says."""
    block = tuple(_command_line(s) for s in st.block) if st.block else st.block
    return Stmt(st.name, st.args, block, st.code, COMMAND_LINE, 0, "", st.code_line)


# -- freezing the filled blocks into the model --

def _freeze(main: Ctx, main_path: str, prefix: str, files: list[str]) -> Config:
    v = main.values
    events = next((c for c in main.children if c.kind == EVENTS), None)
    http = next((c for c in main.children if c.kind == HTTP), None)
    return Config(
        file=main_path,
        prefix=prefix,
        worker_processes=v.get("worker_processes", 1),
        master_process=v.get("master_process", True),
        daemon=v.get("daemon", True),
        pid=v.get("pid", os.path.join(prefix, "logs", "pyngx.pid")),
        error_log=v.get("error_log", ErrorLogConf(os.path.join(prefix, "logs", "error.log"), _DEFAULT_LEVEL)),
        user=v.get("user"),
        worker_shutdown_timeout=v.get("worker_shutdown_timeout", 30.0),
        worker_connections=events.values.get("worker_connections", 1024) if events else 1024,
        thread_pools=_thread_pools(v.get("thread_pools", {})),
        worker_stall_warn=v.get("worker_stall_warn", 0.2),
        worker_stall_timeout=v.get("worker_stall_timeout", 60.0),
        worker_max_requests=v.get("worker_max_requests", (0, 0)),
        http=_http(http) if http is not None else None,
        files=tuple(dict.fromkeys(files)),
    )


def _thread_pools(pools: dict[str, ThreadPoolSpec]) -> tuple[ThreadPoolSpec, ...]:
    """The declared pools, with ``default`` added unless declared (nginx does the same)."""
    return tuple(pools.values()) if "default" in pools else (ThreadPoolSpec("default"), *pools.values())


def _http(ctx: Ctx) -> HttpConf:
    v = ctx.values
    return HttpConf(
        python_path=tuple(v.get("python_path", ())),
        shdicts=tuple(v.get("shdicts", {}).values()),
        max_pending_timers=v.get("max_pending_timers", 1024),
        max_running_timers=v.get("max_running_timers", 256),
        init=v.get("init"),
        init_worker=v.get("init_worker"),
        exit_worker=v.get("exit_worker"),
        access_log=v.get("access_log", AccessLog(None)),
        default_type=v.get("default_type", "text/plain"),
        keepalive_timeout=v.get("keepalive_timeout", 75.0),
        client_header_timeout=v.get("client_header_timeout", 60.0),
        client_body_timeout=v.get("client_body_timeout", 60.0),
        send_timeout=v.get("send_timeout", 60.0),
        client_max_body_size=v.get("client_max_body_size", 1024 * 1024),
        servers=tuple(_server(c) for c in ctx.children if c.kind == SERVER),
        cluster=cluster.freeze(v),
    )


def _server(ctx: Ctx) -> ServerConf:
    v = ctx.values
    st = ctx.stmt
    listens = v.get("listens") or [Listen("0.0.0.0", 80 if os.geteuid() == 0 else 8000,
                                          file=st.file if st else "", line=st.line if st else 0)]
    return ServerConf(
        listens=tuple(listens),
        server_names=tuple(v.get("server_names", ())),
        locations=tuple(_location(c) for c in ctx.children if c.kind == LOCATION),
        fallback=_fallback(ctx),
        file=st.file if st else "",
        line=st.line if st else 0,
    )


def _location(ctx: Ctx) -> LocationConf:
    v = ctx.values
    st = ctx.stmt
    return LocationConf(
        modifier=v["modifier"],
        pattern=v["pattern"],
        regex=v["regex"],
        sets=tuple(v.get("sets", ())),
        ret=v.get("ret"),
        content=v.get("content"),
        status=v.get("status", False),
        **{name: ctx.inherited(name, None) for name in REQUEST_PHASES},
        default_type=ctx.inherited("default_type", "text/plain"),
        client_max_body_size=ctx.inherited("client_max_body_size", 1024 * 1024),
        static=static_conf.freeze(ctx),
        file=st.file if st else "",
        line=st.line if st else 0,
    )


def _fallback(ctx: Ctx) -> LocationConf | None:
    """What answers a URI no location of server CTX matches: files, when a root is in effect (nginx)."""
    static = static_conf.freeze(ctx)
    if static is None:
        return None
    return LocationConf(modifier="", pattern="", regex=None, static=static,
                        default_type=ctx.inherited("default_type", "text/plain"),
                        client_max_body_size=ctx.inherited("client_max_body_size", 1024 * 1024))


__all__ = ["ConfError", "load", "dump", "Config"]
