"""The directives of serving files: root, alias, index, try_files, types and the rest.

Owns their handlers (what each returns; its row in directives.py says where it goes) and `freeze`, which turns the
values in effect in a location (or a server) into one `StaticConf` with nginx's
inheritance: everything but ``alias`` and ``try_files`` is inherited from the
enclosing server and http blocks. Reads no file: paths are resolved, not opened.
"""
from __future__ import annotations

import os
from typing import Any

from pyngx.conf.handlers import LOCATION, Ctx
from pyngx.conf.model import StaticConf
from pyngx.conf.parse import Stmt
from pyngx.conf.values import Invalid

_IMS = ("off", "exact", "before")


def _path(ctx: Ctx, text: str) -> str:
    """A root or alias as written, resolved against the prefix; a trailing slash is kept (alias needs it)."""
    if text.startswith(("/", "$")):
        return text
    return os.path.join(ctx.loader.prefix, text)


def root(ctx: Ctx, st: Stmt) -> str:
    if ctx.has("alias"):
        raise Invalid('"root" directive is duplicate, "alias" directive was specified earlier', whole=True)
    return _path(ctx, st.args[0])


def alias(ctx: Ctx, st: Stmt) -> str:
    if ctx.has("root"):
        raise Invalid('"alias" directive is duplicate, "root" directive was specified earlier', whole=True)
    if ctx.pattern.startswith("@"):
        raise Invalid('"alias" directive cannot be used inside the named location', whole=True)
    return _path(ctx, st.args[0])


def index(ctx: Ctx, st: Stmt) -> tuple[str, ...]:
    for i, name in enumerate(st.args):
        if not name:
            raise Invalid('index "" in "index" directive is invalid', whole=True)
        if name.startswith("/") and i != len(st.args) - 1:
            raise Invalid('only the last index in "index" directive should be absolute', whole=True)
    return tuple(st.args)


def try_files(ctx: Ctx, st: Stmt) -> tuple[str, ...]:
    if len(st.args) < 2:
        raise Invalid('invalid number of arguments in "try_files" directive', whole=True)
    last = st.args[-1]
    if last.startswith("="):
        code = last[1:]
        if not (code.isascii() and code.isdigit()) or int(code) > 999:
            raise Invalid(f'invalid code "{last}"', whole=True)
    return tuple(st.args)


def if_modified_since(text: str) -> str:
    if text not in _IMS:
        raise Invalid(f'invalid value "{text}" in "if_modified_since" directive, '
                      'it must be "off", "exact" or "before"', whole=True)
    return text


def disable_symlinks(ctx: Ctx, st: Stmt) -> tuple[bool, str]:
    mode = st.args[0]
    if mode not in ("on", "off"):  # nginx's if_not_owner is not supported
        raise Invalid(f'invalid value "{mode}" in "disable_symlinks" directive, it must be "off" or "on"',
                      whole=True)
    start = ""
    for param in st.args[1:]:
        key, eq, value = param.partition("=")
        if key != "from" or not eq or not value:
            raise Invalid(f'invalid parameter "{param}"')
        if mode == "off":
            raise Invalid('"from=" cannot be used with "off" parameter', whole=True)
        start = value
    return (mode == "on", start)


def types(ctx: Ctx, st: Stmt) -> dict[str, str]:
    """``types { MIME EXT...; ... }``: the statements of the block are the map, not directives."""
    table = dict(ctx.current(st, {}))
    for sub in st.block or ():
        if sub.block is not None or sub.code is not None:
            raise Invalid(f'directive "{sub.name}" is not terminated by ";"', whole=True)
        for ext in sub.args:
            table[ext.lower()] = sub.name
    return table


def wanted(ctx: Ctx) -> bool:
    """Whether a root, alias or try_files is in effect in CTX: the cheap test before `freeze`."""
    return ctx.has("try_files") or (ctx.kind == LOCATION and ctx.has("alias")) or \
        ctx.inherited(ctx.keys["root"], None) is not None


def freeze(ctx: Ctx, settings: dict[str, Any]) -> StaticConf | None:
    """The file serving in effect in a location or server CTX; None when no root, alias or try_files is.

    SETTINGS: StaticConf's fields as the directive table fills them (inherited as their rows say);
    root, alias and disable_symlinks are turned into the model's fields here.
    """
    alias_path = settings["alias"] if ctx.kind == LOCATION else None
    root_path = alias_path if alias_path is not None else settings["root"]
    tries = settings["try_files"]  # not inherited, as nginx
    if root_path is None and not tries:
        return None
    if root_path is None:
        root_path = os.path.join(ctx.loader.prefix, "html")  # nginx's default root
    elif alias_path is None:
        root_path = root_path.rstrip("/") or "/"
    prefix = ""
    if alias_path is not None and ctx.regex is None:
        prefix = ctx.pattern
    nofollow, start = settings["disable_symlinks"]
    if start and not start.startswith("$"):
        start = _path(ctx, start)
    # "types {}" (empty) is kept: no type known
    return StaticConf(**{**settings, "root": root_path, "alias": alias_path is not None, "prefix": prefix,
                         "disable_symlinks": nofollow, "symlinks_from": start})
