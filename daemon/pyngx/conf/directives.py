"""THE directive table, and the one function that checks a statement against it.

Each row says where a directive may appear, how many arguments it takes, whether it
opens a block, how its value is parsed, where it goes in the model (``to``), its
default and whether inner blocks inherit it (nginx's ``ngx_command_t`` and the
create/merge conf functions in one). The framework checks the context, the ``;``/``{``
and the argument count once, before any parser; a parser raises `values.Invalid` with a
short reason and the framework adds ``"NAME" directive`` and the file:line. Values go
into mutable `Ctx` records under their row's key; `settings` reads them back with the
defaults and inheritance of the rows, and `pyngx.conf` freezes them into the model.
The docs' reference (docs/config.md) is generated from the rows too.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyngx.conf import cluster as cl
from pyngx.conf import handlers as h
from pyngx.conf import model
from pyngx.conf import static as st
from pyngx.conf import values
from pyngx.conf.model import DEFAULT_TYPES, AccessLog
from pyngx.conf.parse import ConfError, Stmt
from pyngx.conf.values import Invalid

from pyngx.conf.handlers import ANY, EVENTS, HTTP, LOCATION, MAIN, SERVER, Ctx

CONTEXT_NAMES = {MAIN: "main", EVENTS: "events", HTTP: "http", SERVER: "server", LOCATION: "location"}

# Argument counts, as bits (nginx's NGX_CONF_TAKE*): bit N set = N arguments allowed.
NOARGS, TAKE1, TAKE2, TAKE3 = 1, 2, 4, 8
TAKE12, TAKE23, TAKE123 = TAKE1 | TAKE2, TAKE2 | TAKE3, TAKE1 | TAKE2 | TAKE3
ONEMORE = 1 << 30  # one or more

# Kinds of statement.
SIMPLE, BLOCK, PYTHON = "simple", "block", "python"

Handler = Callable[[Ctx, Stmt], Any]


class Text(str):
    """A default written as the directive's arguments (``pid``'s ``logs/pyngx.pid``): the handler makes
    the value at freeze time, as if the line were in the config (paths resolve under the prefix)."""


@dataclass(frozen=True, slots=True)
class Directive:
    """One row of the table.

    ``to``: where the value goes, as ``"Model.field"`` of pyngx.conf.model (one or more; checked at import);
    ``parse``: a one-argument value parser (values.py) or ``handler``: ``(ctx, stmt) -> value`` (a `Ctx`
    for a block directive without ``to``); ``default``: the typed value when the directive is absent;
    ``inherit``: a location takes its server's value, a server http's (nginx's merge_loc_conf).
    """

    name: str
    contexts: int
    nargs: int
    to: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    handler: Handler | None = None
    default: Any = None
    inherit: bool = False
    kind: str = SIMPLE
    multi: bool = False  # may repeat in one block
    shown: str | None = None  # the default as documented, when not derived from it ("": none shown)
    syntax: str = ""  # the arguments, as documented
    doc: str = ""

    key: str = field(init=False, default="")  # where a block keeps the value: its first target's field

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.to[0].partition(".")[2] if self.to else "")

    @property
    def documented_default(self) -> str:
        if self.shown is not None:
            return self.shown
        if not self.to or self.default is None or self.default == ():  # nothing (a list that starts empty)
            return ""
        if isinstance(self.default, Text):
            return str(self.default)
        show = _SHOW.get(self.parse)  # type: ignore[arg-type]
        return show(self.default) if show else str(self.default)


_SHOW: dict[Any, Callable[[Any], str]] = {values.time: values.show_time, values.size: values.show_size,
                                          values.flag: values.show_flag, h.stall_time: values.show_time}
INWARDS = HTTP | SERVER | LOCATION  # inherited inwards: http → server → location


def D(name: str, contexts: int, nargs: int, *how: Any, to: str | tuple[str, ...] = (), **kw: Any) -> Directive:
    """A row: HOW is a parser (one argument) or a handler (two)."""
    for fn in how:  # a parser's first argument is the text, a handler's the block
        kw["handler" if fn.__code__.co_varnames[0] == "ctx" else "parse"] = fn
    return Directive(name, contexts, nargs, (to,) if isinstance(to, str) else to, **kw)


DIRECTIVES: tuple[Directive, ...] = (
    # -- main --
    D("worker_processes", MAIN, TAKE1, h.processes, to="Config.worker_processes", default=1, syntax="N | auto",
      doc="How many worker processes serve requests; `auto` is one per CPU."),
    D("master_process", MAIN, TAKE1, values.flag, to="Config.master_process", default=True, syntax="on | off",
      doc="`off` runs one process that is both master and worker (`process.type() == \"single\"`)."),
    D("daemon", MAIN, TAKE1, values.flag, to="Config.daemon", default=True, syntax="on | off",
      doc="Detach from the terminal; the pid file is written either way."),
    D("pid", MAIN, TAKE1, h.pid, to="Config.pid", default=Text("logs/pyngx.pid"), syntax="PATH",
      doc="Where the master writes its pid (relative paths under the prefix)."),
    D("error_log", MAIN, TAKE12, h.error_log, to="Config.error_log", default=Text("logs/error.log error"),
      syntax="PATH|stderr [LEVEL]",
      doc="The error log and its lowest level: debug info notice warn error crit alert emerg."),
    D("user", MAIN, TAKE12, h.user, to="Config.user", syntax="USER [GROUP]",
      doc="Workers run as USER (and GROUP, else the user's primary group) when the master runs as root."),
    D("worker_shutdown_timeout", MAIN, TAKE1, values.time, to="Config.worker_shutdown_timeout", default=30.0,
      syntax="TIME", doc="How long a gracefully exiting worker may finish requests and timers before it is stopped."),
    D("thread_pool", MAIN, TAKE123, h.thread_pool, to="Config.thread_pools", default=(), multi=True,
      shown="default threads=32 max_queue=65536",
      syntax="NAME [threads=N] [max_queue=M]", doc="A pool of N threads in each worker and the agent for "
      "`await ngx.run_worker_thread(NAME, fn, ...)`; at most M calls wait for a thread (an error beyond). "
      "A pool named `default` exists without this directive."),
    D("worker_stall_warn", MAIN, TAKE1, h.stall_time, to="Config.worker_stall_warn", default=0.2,
      syntax="TIME | off",
      doc="Log a warning with the Python stack when a worker's or the agent's event loop has not run for TIME."),
    D("worker_stall_timeout", MAIN, TAKE1, h.stall_time, to="Config.worker_stall_timeout", default=60.0,
      syntax="TIME | off", doc="The master replaces a worker or the agent whose event loop has not run for TIME."),
    D("worker_max_requests", MAIN, TAKE12, h.worker_max_requests, to="Config.worker_max_requests", default=(0, 0),
      shown="0", syntax="N [jitter=M]",
      doc="Replace a worker gracefully after N requests (plus a random 0..M, so workers do not all leave "
      "at once); for user code that leaks. 0: never."),
    D("worker_rlimit_nofile", MAIN, TAKE1, values.positive, to="Config.worker_rlimit_nofile", syntax="N",
      doc="The most open files (RLIMIT_NOFILE, soft and hard) of each worker, the privileged agent and a single "
      "process; set while still root, so it may exceed the master's. Without it they keep the master's limit. "
      "A failure is logged (`setrlimit(RLIMIT_NOFILE, N) failed`) and the process serves on."),
    D("events", MAIN, NOARGS, h.events, kind=BLOCK, syntax="{ ... }", doc="Connection processing settings."),
    D("worker_connections", EVENTS, TAKE1, values.positive, to="Config.worker_connections", default=1024,
      syntax="N", doc="The most connections one worker keeps open at once."),
    D("include", ANY, TAKE1, h.include, multi=True, syntax="GLOB",
      doc="Insert the files matching GLOB (relative to the main config file's directory), sorted."),
    D("http", MAIN, NOARGS, h.http, kind=BLOCK, syntax="{ ... }", doc="The HTTP server and the Python runtime."),
    # -- http --
    D("python_path", HTTP, ONEMORE, h.python_path, to="HttpConf.python_path", default=(), multi=True,
      syntax="DIR ...", doc="Directories prepended to `sys.path` (relative paths under the prefix)."),
    D("python_shared_dict", HTTP, TAKE23, h.python_shared_dict, to="HttpConf.shdicts", default=(), multi=True,
      syntax="NAME SIZE [persist=PATH]",
      doc="A shared dict zone `ngx.shared.NAME` of SIZE bytes; `persist=` saves it at stop and loads it at start."),
    D("python_max_pending_timers", HTTP, TAKE1, values.positive, to="HttpConf.max_pending_timers", default=1024,
      syntax="N", doc="The most pending timers in one process (`TooManyTimersError` beyond it)."),
    D("python_max_running_timers", HTTP, TAKE1, values.positive, to="HttpConf.max_running_timers", default=256,
      syntax="N", doc="The most timer callbacks running at once in one process."),
    D("init_by_python_block", HTTP, NOARGS, h.module_block, to="HttpConf.init", kind=PYTHON, syntax="{ PYTHON }",
      doc="Python run once in the master at (re)load, before the fork; may use shared dicts."),
    D("init_by_python_file", HTTP, TAKE1, h.module_file, to="HttpConf.init", syntax="PATH",
      doc="The same, from a file (relative paths under the prefix)."),
    D("init_worker_by_python_block", HTTP, NOARGS, h.module_block, to="HttpConf.init_worker", kind=PYTHON,
      syntax="{ PYTHON }", doc="Python run in every worker and the privileged agent when it starts."),
    D("init_worker_by_python_file", HTTP, TAKE1, h.module_file, to="HttpConf.init_worker", syntax="PATH",
      doc="The same, from a file."),
    D("access_log", HTTP, TAKE12, h.access_log, to="HttpConf.access_log", default=AccessLog(None), shown="off",
      syntax="PATH [combined] | off", doc="The access log, in the combined format, or `off`."),
    D("default_type", INWARDS, TAKE1, values.word, to=("HttpConf.default_type", "LocationConf.default_type"),
      default="text/plain", inherit=True, syntax="MIME",
      doc="The Content-Type of answers that set none (`return` texts included)."),
    D("keepalive_timeout", HTTP, TAKE1, values.time, to="HttpConf.keepalive_timeout", default=75.0, syntax="TIME",
      doc="How long an idle keep-alive connection stays open."),
    D("client_header_timeout", HTTP, TAKE1, values.time, to="HttpConf.client_header_timeout", default=60.0,
      syntax="TIME", doc="How long a client may take to send the whole request head."),
    D("client_body_timeout", HTTP, TAKE1, values.time, to="HttpConf.client_body_timeout", default=60.0,
      syntax="TIME", doc="The longest pause between two reads of the request body."),
    D("send_timeout", HTTP, TAKE1, values.time, to="HttpConf.send_timeout", default=60.0, syntax="TIME",
      doc="The longest pause between two writes of the response."),
    D("client_max_body_size", INWARDS, TAKE1, values.size,
      to=("HttpConf.client_max_body_size", "LocationConf.client_max_body_size"), default=1 << 20, inherit=True,
      syntax="SIZE", doc="The largest request body accepted (413 beyond it); 0 means no limit."),
    D("python_cluster", HTTP, ONEMORE, cl.python_cluster, to="HttpConf.cluster",
      syntax="redis://HOST:PORT/DB [name=CLUSTER] [node=NODE] "
      "[lease=TIME] [buffer=N]", doc="Join a cluster of nodes through Redis: `events.post(..., cluster=True)` and "
      "`ngx.timer.every(..., unique=NAME, scope=\"cluster\")` (see docs/cluster.md). Off when absent."),
    D("python_cluster_retention", HTTP, TAKE1, values.positive, to="ClusterConf.retention", default=100000,
      syntax="N", doc="How many cluster events Redis keeps (at least) for nodes that were away."),
    D("server", HTTP, NOARGS, h.server, kind=BLOCK, multi=True, syntax="{ ... }", doc="A virtual server."),
    # -- server --
    D("listen", SERVER, ONEMORE, h.listen, to="ServerConf.listens", default=(), multi=True,
      shown="*:80 (*:8000 when not root)",
      syntax="[ADDR:]PORT [reuseport]", doc="An address to accept connections on: `8080`, `127.0.0.1:8080`, "
      "`[::1]:8080`, `*:8080`; `reuseport` gives each worker its own socket (SO_REUSEPORT)."),
    D("server_name", SERVER, ONEMORE, h.server_name, to="ServerConf.server_names", default=(), multi=True,
      syntax="NAME ...", doc="The names this server answers for (matched against Host)."),
    D("location", SERVER, TAKE12, h.location, kind=BLOCK, multi=True, syntax="[= | ^~ | ~ | ~*] PATTERN { ... }",
      doc="Settings for matching URIs, in nginx's order: exact `=`, then the longest prefix (`^~` stops "
      "there), then regexes (`~`, `~*` case-insensitive) in config order, then the longest prefix."),
    # -- location --
    D("set", LOCATION, TAKE2, h.set_var, to="LocationConf.sets", default=(), multi=True, syntax="$VAR VALUE",
      doc="Set a variable (`ngx.var.VAR`); VALUE may use `$variables` and regex captures `$1`..."),
    D("return", LOCATION, TAKE12, h.return_, to="LocationConf.ret", syntax="CODE [TEXT | URL] | URL",
      doc="Answer at once: CODE with TEXT, or a redirect to URL (301 302 303 307 308; a bare URL is 302)."),
    D("content_by_python_block", LOCATION, NOARGS, h.phase_chunk("content", "handler", False),
      to="LocationConf.content", kind=PYTHON, syntax="{ PYTHON }",
      doc="The request handler: Python run for each request with the `ngx` request API; it may `await`."),
    D("content_by_python_file", LOCATION, TAKE1, h.phase_chunk("content", "handler", True),
      to="LocationConf.content", syntax="PATH", doc="The same, from a file."),
    # -- files (ngx_http_core_module, ngx_http_index_module, ngx_http_static_module) --
    D("root", INWARDS, TAKE1, st.root, to="StaticConf.root", inherit=True, shown="html", syntax="PATH",
      doc="Serve files under PATH: a URI maps to PATH + URI (relative paths under the prefix; `$variables` "
      "allowed). A location with no `content_by_python`, `return` or `pyngx_status` serves files when a "
      "`root`, `alias` or `try_files` is in effect; without any it answers 404."),
    D("alias", LOCATION, TAKE1, st.alias, to="StaticConf.alias", syntax="PATH",
      doc="Serve files under PATH with the location's prefix replaced by PATH; in a regex location PATH is "
      "the whole file path (captures `$1`... allowed)."),
    D("index", INWARDS, ONEMORE, st.index, to="StaticConf.index", default=("index.html",), inherit=True,
      shown="index.html", syntax="FILE ...",
      doc="For a URI ending in `/`: the first FILE that exists is served by an internal redirect to URI + FILE; "
      "none is 403 (a missing directory 404). The last may be an absolute URI, used without a check."),
    D("try_files", SERVER | LOCATION, ONEMORE, st.try_files, to="StaticConf.try_files", default=(),
      syntax="FILE ... URI | =CODE | @NAME",
      doc="Serve the first FILE that exists (`$uri/` tests a directory); otherwise an internal redirect to the "
      "last URI, the named location `@NAME`, or the answer CODE. Not inherited, as nginx."),
    D("sendfile", INWARDS, TAKE1, values.flag, to="StaticConf.sendfile", default=False, inherit=True,
      syntax="on | off",
      doc="Send file bodies with sendfile(2) (no copy through Python); `off` reads them in 32k pieces."),
    D("etag", INWARDS, TAKE1, values.flag, to="StaticConf.etag", default=True, inherit=True, syntax="on | off",
      doc="An `ETag` (nginx's `\"MTIME-SIZE\"` in hex) on files, checked against `If-None-Match`."),
    D("if_modified_since", INWARDS, TAKE1, st.if_modified_since, to="StaticConf.if_modified_since",
      default="exact", inherit=True,
      syntax="off | exact | before", doc="How `If-Modified-Since` is compared with a file's time for a 304."),
    D("max_ranges", INWARDS, TAKE1, values.number, to="StaticConf.max_ranges", default=-1, inherit=True,
      shown="", syntax="N",
      doc="The most byte ranges served in one request (more: the whole file); 0 disables ranges. No limit by "
      "default."),
    D("disable_symlinks", INWARDS, TAKE12, st.disable_symlinks, to="StaticConf.disable_symlinks",
      default=(False, ""), inherit=True, shown="off",
      syntax="off | on [from=PART]", doc="`on` refuses a file with a symbolic link in its path, checking "
      "each component after PART (`from=`; default: from `/`): 403 for the last one, 404 for one in the middle, "
      "as nginx."),
    D("log_not_found", INWARDS, TAKE1, values.flag, to="StaticConf.log_not_found", default=True, inherit=True,
      syntax="on | off", doc="Log a file that is not found (a 404) in the error log."),
    D("types", INWARDS, NOARGS, st.types, to="StaticConf.types", default=DEFAULT_TYPES, inherit=True,
      shown="", kind=BLOCK, multi=True,
      syntax="{ MIME EXT ...; ... }", doc="File extensions → Content-Type (nginx's `mime.types`); without "
      "any, html, gif and jpg are known and the rest get `default_type`."),
    # -- request phases: http, server, location (inherited inwards), in nginx's order --
    *(row for key, what in (
        ("rewrite", "Python run in the rewrite phase (after `set`); it may `await`; `ngx.exit(ngx.OK)` moves on."),
        ("access", "Python run in the access phase (after rewrite); it may `await`; `ngx.exit(403)` refuses."),
        ("header_filter", "Python run once before the response head goes out; may change `ngx.status` and "
         "`ngx.header`; may not await."),
        ("body_filter", "Python run for each piece of the body: `ngx.arg[1]` is the chunk (assign to change or "
         "drop it), `ngx.arg[2]` is eof; may not await."),
        ("log", "Python run after the response was sent; its errors are logged, never sent; may not await."),
    ) for row in (
        D(f"{key}_by_python_block", INWARDS, NOARGS, h.phase_chunk(key, "handler", False),
          to=f"LocationConf.{key}", inherit=True, kind=PYTHON, syntax="{ PYTHON }", doc=what),
        D(f"{key}_by_python_file", INWARDS, TAKE1, h.phase_chunk(key, "handler", True),
          to=f"LocationConf.{key}", inherit=True, syntax="PATH", doc="The same, from a file."),
    )),
    D("exit_worker_by_python_block", HTTP, NOARGS, h.phase_chunk("exit_worker", "module", False),
      to="HttpConf.exit_worker", kind=PYTHON,
      syntax="{ PYTHON }", doc="Python run in every worker and the privileged agent at graceful exit, before "
      "pending timers fire premature; may not await."),
    D("exit_worker_by_python_file", HTTP, TAKE1, h.phase_chunk("exit_worker", "module", True),
      to="HttpConf.exit_worker", syntax="PATH", doc="The same, from a file."),
    D("pyngx_status", LOCATION, NOARGS, h.status, to="LocationConf.status", default=False, shown="", syntax="",
      doc="The status page: process tree, requests, timers, shared dicts, IPC and event counters as JSON, "
      "or Prometheus text with `?format=prometheus`."),
)
del D

TABLE: dict[str, Directive] = {d.name: d for d in DIRECTIVES}
# Directives that fill the same slot (a block and a file for one phase).
SLOTS = {"init_by_python_file": "init_by_python_block", "init_worker_by_python_file": "init_worker_by_python_block",
         "content_by_python_file": "content_by_python_block"}
SLOTS.update({f"{key}_by_python_file": f"{key}_by_python_block"
              for key in ("rewrite", "access", "header_filter", "body_filter", "log", "exit_worker")})


def _targets(rows: tuple[Directive, ...]) -> dict[type, list[tuple[str, Directive]]]:
    """Model class → (field, row) for every row's targets; a target that is not a field fails here, at import."""
    out: dict[type, list[tuple[str, Directive]]] = {}
    for d in rows:
        if (d.parse is None) == (d.handler is None):
            raise TypeError(f"directive {d.name}: give a parser or a handler")
        for target in d.to:
            cls_name, _, name = target.partition(".")
            cls = getattr(model, cls_name, None)
            if not dataclasses.is_dataclass(cls) or name not in {f.name for f in dataclasses.fields(cls)}:
                raise TypeError(f"directive {d.name}: no field {target!r} in pyngx.conf.model")
            fields = out.setdefault(cls, [])  # type: ignore[arg-type]
            if all(name != taken for taken, _ in fields):  # a block and a file for one slot: once
                fields.append((name, d))
    return out


TARGETS = _targets(DIRECTIVES)
h.Ctx.keys = {d.name: d.key for d in DIRECTIVES if d.to}


def settings(cls: type, ctx: Ctx) -> dict[str, Any]:
    """The fields of model CLS that directives fill, as in effect in block CTX: the value set there,
    else (for a row that inherits) the nearest enclosing block's, else the row's default."""
    out: dict[str, Any] = {}
    for name, d in TARGETS[cls]:
        key = d.key
        value = ctx.inherited(key, d.default) if d.inherit else ctx.values.get(key, d.default)
        if isinstance(value, Text):  # run the default through the handler, as if written here
            assert d.handler is not None
            value = d.handler(ctx, Stmt(d.name, tuple(value.split()), None, None, "", 0))
        out[name] = value
    return out


def value(ctx: Ctx, name: str) -> Any:
    """What directive NAME set in block CTX (its row's default when absent)."""
    d = TABLE[name]
    return ctx.values.get(d.key, d.default)


def default(name: str) -> Any:
    """The default of directive NAME, for code that runs without a config (no http block, ``-e``)."""
    return TABLE[name].default


def _arity_ok(d: Directive, n: int) -> bool:
    if d.nargs & ONEMORE:
        return n >= 1
    return n < 30 and bool(d.nargs & (1 << n))


def check(ctx: Ctx, st: Stmt) -> Directive:
    """The row for ST, once its context, terminator and arguments are right. Raises ConfError."""
    where = (st.file, st.line)
    d = TABLE.get(st.name)
    if d is None:
        raise ConfError(f'unknown directive "{st.name}"', *where)
    if not d.contexts & ctx.kind:
        raise ConfError(f'"{st.name}" directive is not allowed here', *where)
    if d.kind == SIMPLE and st.block is not None:
        raise ConfError(f'directive "{st.name}" is not terminated by ";"', *where)
    if d.kind != SIMPLE and st.block is None:
        raise ConfError(f'directive "{st.name}" has no opening "{{"', *where)
    if d.kind == BLOCK and st.code is not None:  # cannot happen: only *_block names capture Python
        raise ConfError(f'directive "{st.name}" has no opening "{{"', *where)
    if not _arity_ok(d, len(st.args)):
        raise ConfError(f'invalid number of arguments in "{st.name}" directive', *where)
    return d


def apply(ctx: Ctx, st: Stmt, *, override: bool = False) -> None:
    """Check ST, run its handler in CTX, then the statements of its block. Raises ConfError.

    OVERRIDE (the -g directives) replaces a value the file set instead of calling it a duplicate.
    """
    d = check(ctx, st)
    slot = SLOTS.get(d.name, d.name)
    if not d.multi:
        first = ctx.seen.get(slot)
        if first is not None and not override:
            raise ConfError(f'"{st.name}" directive is duplicate', st.file, st.line)
        ctx.seen[slot] = st
    try:
        if d.parse is not None:
            ctx.values[d.key] = d.parse(st.args[0])
            return
        assert d.handler is not None
        inner = d.handler(ctx, st)
    except Invalid as exc:
        message = exc.reason if exc.whole else f'"{st.name}" directive {exc.reason}'
        raise ConfError(message, st.file, st.line) from None
    if d.to:
        ctx.values[d.key] = inner
    elif inner is not None and st.block:
        for sub in st.block:
            apply(inner, sub)


def resolve(prefix: str, path: str) -> str:
    """A path from the config: relative ones resolve against the prefix, as nginx does."""
    return os.path.normpath(os.path.join(prefix, path))


# -- the reference in docs/config.md is generated from the table --

DOC_BEGIN = "<!-- directives: generated from pyngx/conf/directives.py; do not edit by hand -->"
DOC_END = "<!-- end of directives -->"


def reference() -> str:
    """The directive reference (markdown), one entry per row, in table order."""
    out = [DOC_BEGIN, ""]
    for d in DIRECTIVES:
        where = "any" if d.contexts == ANY else ", ".join(n for bit, n in CONTEXT_NAMES.items() if d.contexts & bit)
        out.append(f"### `{d.name}`")
        out.append("")
        out.append(f"    {d.name}{' ' + d.syntax if d.syntax else ''}{'' if d.kind != SIMPLE else ';'}")
        out.append("")
        facts = [f"context: {where}"]
        if d.documented_default:
            facts.append(f"default: `{d.documented_default}`")
        if d.multi:
            facts.append("may repeat")
        out.append("*" + "; ".join(facts) + "*")
        out.append("")
        out.append(d.doc)
        out.append("")
    out.append(DOC_END)
    return "\n".join(out) + "\n"


def update_doc(path: str) -> bool:
    """Rewrite the generated part of the file at PATH; True when it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, _, rest = text.partition(DOC_BEGIN)
    _, _, tail = rest.partition(DOC_END + "\n")
    new = head + reference() + tail
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text

