"""The parsed configuration: frozen, slotted dataclasses.

Everything downstream of ``pyngx.conf.load`` consumes these objects; nothing
re-parses text. Times are float seconds, sizes int bytes. Every node that a
user wrote keeps ``file`` and ``line`` so later errors can point at it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import CodeType
from typing import Literal

ChunkKind = Literal["module", "handler"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Compiled user Python from a ``*_by_python_block`` or ``*_by_python_file``.

    kind "module": run as module code in the generation's globals
    (init_by_python, init_worker_by_python); ``is_async`` means ``eval(code)``
    returns a coroutine (top-level await).
    kind "handler": ``code`` is a module that defines one function named
    ``HANDLER_NAME`` whose body is the block (content_by_python), so names
    assigned in the block are locals of one request, like Lua's ``local``;
    ``is_async`` means that function is ``async def``.
    """

    code: CodeType
    kind: ChunkKind
    is_async: bool
    file: str
    line: int


HANDLER_NAME = "__pyngx_handler__"


@dataclass(frozen=True, slots=True)
class Listen:
    addr: str  # "0.0.0.0", "127.0.0.1", "::1" ...
    port: int
    reuseport: bool = False
    file: str = ""
    line: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.addr, self.port)


@dataclass(frozen=True, slots=True)
class ShdictSpec:
    name: str
    size: int
    persist: str | None = None  # absolute path
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class SetVar:
    """``set $name VALUE;`` where VALUE may hold $vars and $1.. captures."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Return:
    """``return CODE [TEXT|URL];``"""

    code: int
    text: str | None = None


# nginx's built-in ``types`` when a config sets none (ngx_http_core_module.c).
DEFAULT_TYPES: dict[str, str] = {"html": "text/html", "gif": "image/gif", "jpg": "image/jpeg"}


@dataclass(frozen=True, slots=True)
class StaticConf:
    """Serving files in a location or a server: nginx's root/alias, index, try_files and friends."""

    root: str  # absolute, or a template holding $variables (then resolved per request)
    alias: bool = False  # ``alias``: ``root`` replaces the location's PREFIX instead of prefixing the URI
    prefix: str = ""  # the location's pattern an alias replaces ("" for a regex location)
    index: tuple[str, ...] = ("index.html",)
    try_files: tuple[str, ...] = ()
    sendfile: bool = False
    etag: bool = True
    if_modified_since: str = "exact"  # off | exact | before
    max_ranges: int = -1  # -1: no limit; 0: ranges disabled
    disable_symlinks: bool = False
    symlinks_from: str = ""  # with disable_symlinks: the part of the path not checked (from=)
    log_not_found: bool = True
    types: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TYPES)


@dataclass(frozen=True, slots=True)
class LocationConf:
    modifier: Literal["", "=", "^~", "~", "~*"]
    pattern: str
    regex: re.Pattern[str] | None  # compiled for "~" and "~*"
    sets: tuple[SetVar, ...] = ()
    ret: Return | None = None
    content: Chunk | None = None
    status: bool = False  # pyngx_status;
    # the other request phases, effective (a location inherits its server's, a server http's)
    rewrite: Chunk | None = None
    access: Chunk | None = None
    header_filter: Chunk | None = None
    body_filter: Chunk | None = None
    log: Chunk | None = None
    default_type: str = "text/plain"  # effective (inherited from server/http)
    client_max_body_size: int = 1024 * 1024  # effective
    static: StaticConf | None = None  # files, when a root or alias is in effect
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class ServerConf:
    listens: tuple[Listen, ...]
    server_names: tuple[str, ...] = ()
    locations: tuple[LocationConf, ...] = ()
    fallback: LocationConf | None = None  # answers a URI no location matches (a server-level root)
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class AccessLog:
    path: str | None  # absolute path; None = off


@dataclass(frozen=True, slots=True)
class ClusterConf:
    """``python_cluster URL [name=] [node=] [lease=] [buffer=];`` and ``python_cluster_retention``."""

    url: str  # redis://, rediss:// or unix:// as the redis package reads it
    name: str = "pyngx"  # the cluster: every key in Redis starts with pyngx:{NAME}:
    node: str = ""  # this node's name ("" = host name and a hash of the prefix)
    lease: float = 5.0  # seconds a cluster job's lease lasts without renewal
    buffer: int = 10000  # cluster posts one process keeps while Redis is unreachable
    retention: int = 100000  # the stream's max length (approximate, at least this many)
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class HttpConf:
    python_path: tuple[str, ...] = ()  # absolute directories
    shdicts: tuple[ShdictSpec, ...] = ()
    max_pending_timers: int = 1024
    max_running_timers: int = 256
    init: Chunk | None = None
    init_worker: Chunk | None = None
    exit_worker: Chunk | None = None
    access_log: AccessLog = AccessLog(None)
    default_type: str = "text/plain"
    keepalive_timeout: float = 75.0
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    send_timeout: float = 60.0
    client_max_body_size: int = 1024 * 1024
    servers: tuple[ServerConf, ...] = ()
    cluster: ClusterConf | None = None  # python_cluster


@dataclass(frozen=True, slots=True)
class ErrorLogConf:
    path: str | None  # absolute; None = stderr
    level: int  # pyngx.log level number


@dataclass(frozen=True, slots=True)
class UserConf:
    user: str
    group: str | None  # None: the user's primary group


@dataclass(frozen=True, slots=True)
class ThreadPoolSpec:
    """``thread_pool NAME [threads=N] [max_queue=M];`` (nginx's defaults: 32 threads, 65536 waiting)."""

    name: str
    threads: int = 32
    max_queue: int = 65536
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, as `pyngx.conf.load` returns it."""

    file: str  # absolute path of the main config file
    prefix: str  # absolute prefix (-p), with no trailing slash
    worker_processes: int = 1  # "auto" resolved to os.cpu_count()
    master_process: bool = True
    daemon: bool = True
    pid: str = ""  # absolute path; default <prefix>/logs/pyngx.pid
    error_log: ErrorLogConf = ErrorLogConf(None, 4)
    user: UserConf | None = None
    worker_shutdown_timeout: float = 30.0
    worker_connections: int = 1024
    # name -> pool; "default" is always there (thread_pool may redefine it)
    thread_pools: tuple[ThreadPoolSpec, ...] = (ThreadPoolSpec("default"),)
    worker_stall_warn: float | None = 0.2  # seconds; None = off
    worker_stall_timeout: float | None = 60.0  # seconds; None = off
    worker_max_requests: tuple[int, int] = (0, 0)  # (N, jitter M): replace a worker after N + 0..M requests
    worker_rlimit_nofile: int | None = None  # RLIMIT_NOFILE of workers, the agent, single; None: inherited
    http: HttpConf | None = None
    files: tuple[str, ...] = field(default=())  # every file read, includes expanded
