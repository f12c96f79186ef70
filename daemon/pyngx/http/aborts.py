"""``ngx.on_abort``: the client went away before the answer was complete.

A request that registered a callback has its connection looked at every
``ABORT_POLL`` seconds; once the client closed its side, each callback runs in
the context of the phase that registered it. ``ngx.exit`` in a callback ends
the request (499 in the log, as nginx's client abort).
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from pyngx.http import answers
from pyngx.http.exchange import Exchange
from pyngx.runtime.phase import Exit

ABORT_POLL = 0.1  # seconds between looks at the connection of a request that registered on_abort


def on_abort(ex: Exchange, fn: Any, context: contextvars.Context) -> None:
    """Call FN (in CONTEXT, the registering phase's) once the client of EX closes its side."""
    more = ex.extra()
    more.aborts.append((fn, context))
    more.abort_task = asyncio.current_task()
    if len(more.aborts) == 1:
        ex.conn.loop.call_later(ABORT_POLL, _check_abort, ex)


def _check_abort(ex: Exchange) -> None:
    conn: Any = ex.conn
    more = ex.extra()
    if ex.done or more.aborted:
        return
    if not (conn.closed or conn.eof):
        conn.loop.call_later(ABORT_POLL, _check_abort, ex)
        return
    more.aborted = True
    for fn, context in more.aborts:
        context.run(_call_abort, ex, fn)


def _call_abort(ex: Exchange, fn: Any) -> None:
    try:
        result = fn()
        if asyncio.iscoroutine(result):
            ex.conn.loop.create_task(_await_abort(ex, result))
    except Exit:
        _end_aborted(ex)
    except BaseException as exc:  # noqa: BLE001 - the user's callback
        answers.log_error(ex.conn, ex, exc, "on_abort")  # type: ignore[arg-type]


async def _await_abort(ex: Exchange, coro: Any) -> None:
    try:
        await coro
    except Exit:
        _end_aborted(ex)
    except BaseException as exc:  # noqa: BLE001
        answers.log_error(ex.conn, ex, exc, "on_abort")  # type: ignore[arg-type]


def _end_aborted(ex: Exchange) -> None:
    """ngx.exit in an on_abort callback ends the request (499 in the log, as nginx's client abort)."""
    task = ex.extra().abort_task
    if not ex.sent:
        ex.status = 499
    if task is not None and not task.done():
        task.cancel()
