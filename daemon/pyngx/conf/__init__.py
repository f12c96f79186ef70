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
from pyngx.conf.handlers import HTTP, LOCATION, MAIN, SERVER, Ctx
from pyngx.conf.model import (Chunk, ChunkKind, ClusterConf, Config, HttpConf, Listen, LocationConf, ServerConf,
                              StaticConf, ThreadPoolSpec)
from pyngx.conf.parse import ConfError as ConfError
from pyngx.conf.parse import Stmt
from pyngx.conf.pycode import compile_chunk
from pyngx.conf.stmtcache import StmtCache

ConfError.__module__ = "pyngx.conf"
COMMAND_LINE = "command line"


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


def load(path: str, prefix: str, extra: Sequence[str] = (), *, reuse: bool = True) -> Config:
    """Read the config at PATH (relative: under PREFIX), with the -g directives EXTRA.

    A text parsed before comes from the statement cache unless REUSE is false (``-t``
    parses every file, and refreshes the cache). Raises ConfError.
    """
    prefix = os.path.abspath(prefix or ".")
    main_path = os.path.normpath(os.path.join(prefix, path))
    files: list[str] = []
    cache = StmtCache.default(read=reuse)
    stmts = parse.parse_file(main_path, files, cache=cache)
    extra_stmts = [_command_line(st) for text in extra for st in _parse_extra(text, cache)]
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


def _parse_extra(text: str, cache: StmtCache | None) -> list[Stmt]:
    try:
        return parse.parse_text(text, COMMAND_LINE, "", cache)
    except ConfError as exc:
        raise ConfError(exc.message, COMMAND_LINE, 0) from None


def _command_line(st: Stmt) -> Stmt:
    """A -g statement: errors in it say "in command line", as nginx says."""
    block = tuple(_command_line(s) for s in st.block) if st.block else st.block
    return Stmt(st.name, st.args, block, st.code, COMMAND_LINE, 0, "", st.code_line)


# -- freezing the filled blocks into the model (fields, defaults and inheritance: the directive table's rows) --

def _freeze(main: Ctx, main_path: str, prefix: str, files: list[str]) -> Config:
    http = next((c for c in main.children if c.kind == HTTP), None)  # events shares main's values
    fields = directives.settings(Config, main)
    return Config(**{
        **fields,
        "file": main_path,
        "prefix": prefix,
        "thread_pools": _thread_pools(fields["thread_pools"]),
        "http": _http(http) if http is not None else None,
        "files": tuple(dict.fromkeys(files)),
    })


def _thread_pools(pools: tuple[ThreadPoolSpec, ...]) -> tuple[ThreadPoolSpec, ...]:
    """The declared pools, with ``default`` added unless declared (nginx does the same)."""
    return pools if any(p.name == "default" for p in pools) else (ThreadPoolSpec("default"), *pools)


def _http(ctx: Ctx) -> HttpConf:
    fields = directives.settings(HttpConf, ctx)
    fields["cluster"] = cluster.freeze(fields["cluster"], directives.settings(ClusterConf, ctx))
    return HttpConf(**fields, servers=tuple(_server(c) for c in ctx.children if c.kind == SERVER))


def _server(ctx: Ctx) -> ServerConf:
    fields = directives.settings(ServerConf, ctx)
    st = ctx.stmt
    if not fields["listens"]:
        fields["listens"] = (Listen("0.0.0.0", 80 if os.geteuid() == 0 else 8000,
                                    file=st.file if st else "", line=st.line if st else 0),)
    return ServerConf(
        **fields,
        locations=tuple(_location(c) for c in ctx.children if c.kind == LOCATION),
        fallback=_fallback(ctx),
        file=st.file if st else "",
        line=st.line if st else 0,
    )


def _location(ctx: Ctx) -> LocationConf:
    st = ctx.stmt
    return LocationConf(
        modifier=ctx.modifier,  # type: ignore[arg-type]  # one of the location handler's _MODIFIERS
        pattern=ctx.pattern,
        regex=ctx.regex,
        **directives.settings(LocationConf, ctx),
        static=_static(ctx),
        file=st.file if st else "",
        line=st.line if st else 0,
    )


def _static(ctx: Ctx) -> StaticConf | None:
    if not static_conf.wanted(ctx):  # most locations: no files, and no need to read their settings
        return None
    return static_conf.freeze(ctx, directives.settings(StaticConf, ctx))


def _fallback(ctx: Ctx) -> LocationConf | None:
    """What answers a URI no location of server CTX matches: files, when a root is in effect (nginx)."""
    static = _static(ctx)
    if static is None:
        return None
    fields = directives.settings(LocationConf, ctx)
    return LocationConf(modifier="", pattern="", regex=None, static=static,
                        default_type=fields["default_type"], client_max_body_size=fields["client_max_body_size"])


__all__ = ["ConfError", "load", "dump", "Config"]
