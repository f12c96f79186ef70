"""Placeholder: the request API lands with the HTTP issue.

The ngx object (``pyngx/__init__.py``) expects: say, print, flush, exit,
redirect, header, var, req, get_status, set_status, get_ctx.
"""
from __future__ import annotations

from typing import Any

from pyngx.errors import WrongContextError


def _no_request(*args: Any, **kwargs: Any) -> Any:
    raise WrongContextError("no request found")


say = print = flush = exit = redirect = get_status = set_status = get_ctx = _no_request  # noqa: A001
header = var = req = None
