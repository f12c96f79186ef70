"""The parsed configuration: frozen, slotted dataclasses.

Everything downstream of ``pyngx.conf.load`` consumes these objects; nothing
re-parses text. Times are float seconds, sizes int bytes. Every node that a
user wrote keeps ``file`` and ``line`` so later errors can point at it.
"""
from __future__ import annotations

import re
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
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class ServerConf:
    listens: tuple[Listen, ...]
    server_names: tuple[str, ...] = ()
    locations: tuple[LocationConf, ...] = ()
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class AccessLog:
    path: str | None  # absolute path; None = off


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


@dataclass(frozen=True, slots=True)
class ErrorLogConf:
    path: str | None  # absolute; None = stderr
    level: int  # pyngx.log level number


@dataclass(frozen=True, slots=True)
class UserConf:
    user: str
    group: str | None  # None: the user's primary group


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
    http: HttpConf | None = None
    files: tuple[str, ...] = field(default=())  # every file read, includes expanded
