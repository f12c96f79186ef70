"""The ``python_cluster`` and ``python_cluster_retention`` directives.

Checks the Redis URL and the parameters while the config is read (``-t``
catches a typo), without importing the redis package: only
`pyngx.runtime.cluster` does that, in a process that joins the cluster.
"""
from __future__ import annotations

import importlib.util
import re
import urllib.parse
from typing import Any

from pyngx.conf import values
from pyngx.conf.handlers import Ctx
from pyngx.conf.model import ClusterConf
from pyngx.conf.parse import Stmt
from pyngx.conf.values import Invalid

SCHEMES = ("redis", "rediss", "unix")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)


def python_cluster(ctx: Ctx, st: Stmt) -> tuple[str, dict[str, Any], str, int]:
    url = st.args[0]
    check_url(url)
    params: dict[str, Any] = {}
    for arg in st.args[1:]:
        key, eq, text = arg.partition("=")
        if not eq or not text or key not in ("name", "node", "lease", "buffer") or key in params:
            raise Invalid(f'invalid parameter "{arg}"')
        if key in ("name", "node"):
            if not _NAME.fullmatch(text):
                raise Invalid(f'invalid {key} "{text}" (letters, digits and "_.:-", at most 64)')
            params[key] = text
        elif key == "lease":
            params[key] = values.time(text)
            if params[key] < 0.1:
                raise Invalid(f'invalid lease "{text}", it must be at least 100ms')
        else:
            params[key] = values.number(text, 1)
    if importlib.util.find_spec("redis") is None:
        raise Invalid("needs the redis package: pip install 'pyngx[cluster]'")
    return (url, params, st.file, st.line)


def check_url(url: str) -> None:
    """A URL the redis package reads: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://, unix://PATH."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid(f'invalid Redis URL "{url}"', whole=True) from None
    if parts.scheme not in SCHEMES:
        raise Invalid(f'invalid Redis URL "{url}" (redis://, rediss:// or unix:// expected)', whole=True)
    if parts.scheme == "unix":
        if not parts.path:
            raise Invalid(f'invalid Redis URL "{url}" (no socket path)', whole=True)
        return
    if not parts.hostname:
        raise Invalid(f'invalid Redis URL "{url}" (no host)', whole=True)
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise Invalid(f'invalid Redis URL "{url}" (the database must be a number)', whole=True)
    del port


def freeze(found: tuple[str, dict[str, Any], str, int] | None, settings: dict[str, Any]) -> ClusterConf | None:
    """The ClusterConf of python_cluster's value FOUND (None: absent) and the http block's SETTINGS of it."""
    if found is None:
        return None
    url, params, file, line = found
    return ClusterConf(url, file=file, line=line, **settings, **params)
