"""The ``ngx`` object: ``import pyngx as ngx``; in config code it is the global ``ngx``.

Re-exports of the public API modules and OpenResty's constants; no logic. The
API modules are imported on first use, so a process loads only what its code
touches (a start, ``pyngx -t`` and ``-s`` need none of them). The module's class
is swapped for one with properties so that ``ngx.status``, ``ngx.ctx`` and
``ngx.headers_sent`` read the current request.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from pyngx import errors
from pyngx import log as log  # the module is callable: ngx.log(level, ...)
from pyngx.errors import (
    ClosedError,
    Error,
    IPCError,
    IsAListError,
    KeyExistsError,
    KeyNotFoundError,
    NoMemoryError,
    NotAListError,
    NotANumberError,
    ProcessExitingError,
    TimeoutError,
    TooManyTimersError,
    WrongContextError,
)
from pyngx.log import ALERT, CRIT, DEBUG, EMERG, ERR, INFO, NOTICE, STDERR, WARN

__version__ = "0.1.0"

# The rest of the API is imported on first use (PEP 562 ``__getattr__`` below): a start, the
# master, ``pyngx -t`` and a worker load only the modules their code touches. NAME -> (module,
# attribute; "" for the module itself).
_LAZY = {
    "events": ("pyngx.events", ""), "ipc": ("pyngx.ipc", ""), "pipe": ("pyngx.pipe", ""),
    "process": ("pyngx.process", ""), "shell": ("pyngx.shell", ""), "timer": ("pyngx.timer", ""),
    "worker": ("pyngx.worker", ""), "config": ("pyngx.worker", "config"),
    "now": ("pyngx.base", "now"), "run_worker_thread": ("pyngx.base", "run_worker_thread"),
    "sleep": ("pyngx.base", "sleep"), "time": ("pyngx.base", "time"), "update_time": ("pyngx.base", "update_time"),
    **{name: ("pyngx.request", name) for name in ("say", "print", "flush", "exit", "redirect", "header", "var")},
    **{name: ("pyngx.flow", name) for name in ("exec", "location", "send_headers", "eof", "on_abort", "arg",
                                               "get_phase")},
    "req": ("pyngx.req", "req"), "shared": ("pyngx.shared", "shared"),
}
# ngx.req and ngx.shared are objects named like their modules (pyngx/req.py, pyngx/shared.py):
# when the import system binds such a module here, _Ngx.__setattr__ binds its object instead.
_OBJECTS = ("req", "shared")


def __getattr__(name: str) -> Any:
    """The API name NAME, imported on its first use and kept in the module (later reads are plain)."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pyngx' has no attribute '{name}'") from None
    value = importlib.import_module(module)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value
    return value


OK = 0
ERROR = -1
AGAIN = -2
DONE = -4
DECLINED = -5

# request methods, OpenResty's numbers (ngx.req.set_method, ngx.location.capture's method=)
HTTP_GET = 2
HTTP_HEAD = 4
HTTP_POST = 8
HTTP_PUT = 16
HTTP_DELETE = 32
HTTP_MKCOL = 64
HTTP_COPY = 128
HTTP_MOVE = 256
HTTP_OPTIONS = 512
HTTP_PROPFIND = 1024
HTTP_PROPPATCH = 2048
HTTP_LOCK = 4096
HTTP_UNLOCK = 8192
HTTP_PATCH = 16384
HTTP_TRACE = 32768

HTTP_CONTINUE = 100
HTTP_SWITCHING_PROTOCOLS = 101
HTTP_OK = 200
HTTP_CREATED = 201
HTTP_ACCEPTED = 202
HTTP_NO_CONTENT = 204
HTTP_PARTIAL_CONTENT = 206
HTTP_SPECIAL_RESPONSE = 300
HTTP_MOVED_PERMANENTLY = 301
HTTP_MOVED_TEMPORARILY = 302
HTTP_SEE_OTHER = 303
HTTP_NOT_MODIFIED = 304
HTTP_TEMPORARY_REDIRECT = 307
HTTP_PERMANENT_REDIRECT = 308
HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_PAYMENT_REQUIRED = 402
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_NOT_ALLOWED = 405
HTTP_NOT_ACCEPTABLE = 406
HTTP_REQUEST_TIMEOUT = 408
HTTP_CONFLICT = 409
HTTP_GONE = 410
HTTP_UPGRADE_REQUIRED = 426
HTTP_TOO_MANY_REQUESTS = 429
HTTP_CLOSE = 444
HTTP_ILLEGAL = 451
HTTP_INTERNAL_SERVER_ERROR = 500
HTTP_METHOD_NOT_IMPLEMENTED = 501
HTTP_BAD_GATEWAY = 502
HTTP_SERVICE_UNAVAILABLE = 503
HTTP_GATEWAY_TIMEOUT = 504
HTTP_VERSION_NOT_SUPPORTED = 505
HTTP_INSUFFICIENT_STORAGE = 507


def _request() -> types.ModuleType:
    from pyngx import request

    return request


class _Ngx(types.ModuleType):
    """The pyngx module with ``status`` and ``ctx`` as properties of the current request."""

    @property
    def status(self) -> int:
        """The response status (get and set; 200 unless set). Set after the head was sent: logged, ignored."""
        return _request().get_status()

    @status.setter
    def status(self, value: int) -> None:
        _request().set_status(value)

    @property
    def ctx(self) -> dict[str, Any]:
        """A dict for the current request only: data shared by its code, gone when it ends."""
        return _request().get_ctx()

    @property
    def headers_sent(self) -> bool:
        from pyngx import flow

        return flow.headers_sent()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OBJECTS and isinstance(value, types.ModuleType):  # `import pyngx.req` binds the module
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        # the API only: not the submodules the import system sets here (runtime, proc, conf, ...)
        # nor this file's own imports
        return sorted({*__all__, "status", "ctx", "__version__"})


sys.modules[__name__].__class__ = _Ngx

__all__ = [
    "errors", "events", "ipc", "pipe", "process", "shell", "timer", "worker", "config", "shared",
    "log", "now", "run_worker_thread", "sleep", "time", "update_time", "say", "print", "flush", "exit", "redirect",
    "header", "var", "req", "exec", "location", "send_headers", "eof", "on_abort", "arg", "get_phase",
    "Error", "WrongContextError", "TooManyTimersError", "ProcessExitingError",
    "NoMemoryError", "KeyExistsError", "KeyNotFoundError", "NotANumberError", "NotAListError",
    "IsAListError", "IPCError", "TimeoutError", "ClosedError",
    "STDERR", "EMERG", "ALERT", "CRIT", "ERR", "WARN", "NOTICE", "INFO", "DEBUG",
    "OK", "ERROR", "AGAIN", "DONE", "DECLINED",
    *(name for name in list(globals()) if name.startswith("HTTP_")),
]
# ngx.status and ngx.ctx are properties of the current request: in dir(ngx), not in __all__
# (``from pyngx import *`` would read them outside a request)
