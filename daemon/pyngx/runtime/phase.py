"""The phase the running code is in, and the check that an API is allowed there.

A context variable, so a timer callback and a request handler running on the
same loop each see their own phase (lua-resty-core checks
``ngx.get_phase()`` the same way).
"""
from __future__ import annotations

import contextvars

from pyngx.errors import WrongContextError

INIT = "init_by_python"
INIT_WORKER = "init_worker_by_python"
CONTENT = "content_by_python"
TIMER = "timer"
IPC = "ipc"
EVENT = "event"
EXEC = "exec"  # pyngx -e
REWRITE = "rewrite_by_python"
ACCESS = "access_by_python"
HEADER_FILTER = "header_filter_by_python"
BODY_FILTER = "body_filter_by_python"
LOG = "log_by_python"
EXIT_WORKER = "exit_worker_by_python"

# ngx.get_phase() names, as OpenResty's (``ngx.get_phase()`` in lua-nginx-module)
SHORT = {INIT: "init", INIT_WORKER: "init_worker", CONTENT: "content", TIMER: "timer", REWRITE: "rewrite",
         ACCESS: "access", HEADER_FILTER: "header_filter", BODY_FILTER: "body_filter", LOG: "log",
         EXIT_WORKER: "exit_worker", IPC: "ipc", EVENT: "event", EXEC: "exec"}
# Groups of request phases, as OpenResty's API contexts list them.
YIELDING = frozenset((REWRITE, ACCESS, CONTENT))  # may await, send output, exit, exec, capture
REQUEST = frozenset((REWRITE, ACCESS, CONTENT, HEADER_FILTER, BODY_FILTER, LOG))  # the request is readable



class Exit(BaseException):
    """Raised by ngx.exit (and ngx.redirect) to end the running handler at once: a request's
    content handler, a timer callback, or the code of ``pyngx -e``.

    A BaseException, so a user's ``except Exception`` does not swallow it.
    """


_phase: contextvars.ContextVar[str | None] = contextvars.ContextVar("pyngx_phase", default=None)


def current() -> str | None:
    return _phase.get()


def set(name: str | None) -> contextvars.Token[str | None]:  # noqa: A001
    return _phase.set(name)


def reset(token: contextvars.Token[str | None]) -> None:
    _phase.reset(token)


def require(*phases: str, api: str) -> None:
    """Raise WrongContextError unless the current phase is one of PHASES."""
    here = _phase.get()
    if here not in phases:
        allowed = ", ".join(phases)
        raise WrongContextError(f"{api}: API disabled in the context of {here or 'this process'} (allowed in {allowed})")


def forbid(*phases: str, api: str) -> None:
    """Raise WrongContextError when the current phase is one of PHASES."""
    here = _phase.get()
    if here in phases:
        raise WrongContextError(f"{api}: API disabled in the context of {here}")
