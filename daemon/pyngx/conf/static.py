"""The directives of serving files: root, alias, index, try_files, types and the rest.

Owns their handlers (what each stores in a `Ctx`) and `freeze`, which turns the
values in effect in a location (or a server) into one `StaticConf` with nginx's
inheritance: everything but ``alias`` and ``try_files`` is inherited from the
enclosing server and http blocks. Reads no file: paths are resolved, not opened.
"""
from __future__ import annotations

import os

from pyngx.conf import values
from pyngx.conf.handlers import LOCATION, Ctx
from pyngx.conf.model import DEFAULT_TYPES, StaticConf
from pyngx.conf.parse import Stmt
from pyngx.conf.values import Invalid

_IMS = ("off", "exact", "before")


def _path(ctx: Ctx, text: str) -> str:
    """A root or alias as written, resolved against the prefix; a trailing slash is kept (alias needs it)."""
    if text.startswith(("/", "$")):
        return text
    return os.path.join(ctx.loader.prefix, text)


def root(ctx: Ctx, st: Stmt) -> None:
    if "alias" in ctx.values:
        raise Invalid('"root" directive is duplicate, "alias" directive was specified earlier', whole=True)
    ctx.values["root"] = _path(ctx, st.args[0])


def alias(ctx: Ctx, st: Stmt) -> None:
    if "root" in ctx.values:
        raise Invalid('"alias" directive is duplicate, "root" directive was specified earlier', whole=True)
    if ctx.values.get("pattern", "").startswith("@"):
        raise Invalid('"alias" directive cannot be used inside the named location', whole=True)
    ctx.values["alias"] = _path(ctx, st.args[0])


def index(ctx: Ctx, st: Stmt) -> None:
    for i, name in enumerate(st.args):
        if not name:
            raise Invalid('index "" in "index" directive is invalid', whole=True)
        if name.startswith("/") and i != len(st.args) - 1:
            raise Invalid('only the last index in "index" directive should be absolute', whole=True)
    ctx.values["index"] = tuple(st.args)


def try_files(ctx: Ctx, st: Stmt) -> None:
    if len(st.args) < 2:
        raise Invalid('invalid number of arguments in "try_files" directive', whole=True)
    last = st.args[-1]
    if last.startswith("="):
        code = last[1:]
        if not (code.isascii() and code.isdigit()) or int(code) > 999:
            raise Invalid(f'invalid code "{last}"', whole=True)
    ctx.values["try_files"] = tuple(st.args)


def _flag(key: str) -> object:
    def handler(ctx: Ctx, st: Stmt) -> None:
        ctx.values[key] = values.flag(st.args[0])
    handler.__name__ = key
    return handler


sendfile = _flag("sendfile")
etag = _flag("etag")
log_not_found = _flag("log_not_found")


def if_modified_since(ctx: Ctx, st: Stmt) -> None:
    text = st.args[0]
    if text not in _IMS:
        raise Invalid(f'invalid value "{text}" in "if_modified_since" directive, '
                      'it must be "off", "exact" or "before"', whole=True)
    ctx.values["if_modified_since"] = text


def max_ranges(ctx: Ctx, st: Stmt) -> None:
    ctx.values["max_ranges"] = values.number(st.args[0])


def disable_symlinks(ctx: Ctx, st: Stmt) -> None:
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
    ctx.values["disable_symlinks"] = (mode == "on", start)


def types(ctx: Ctx, st: Stmt) -> None:
    """``types { MIME EXT...; ... }``: the statements of the block are the map, not directives."""
    table = dict(ctx.values.get("types", {}))
    for sub in st.block or ():
        if sub.block is not None or sub.code is not None:
            raise Invalid(f'directive "{sub.name}" is not terminated by ";"', whole=True)
        for ext in sub.args:
            table[ext.lower()] = sub.name
    ctx.values["types"] = table


def freeze(ctx: Ctx) -> StaticConf | None:
    """The file serving in effect in a location or server CTX; None when no root, alias or try_files is."""
    here = ctx.values
    alias_path = here.get("alias") if ctx.kind == LOCATION else None
    root_path = alias_path if alias_path is not None else ctx.inherited("root", None)
    tries = here.get("try_files", ())  # not inherited, as nginx
    if root_path is None and not tries:
        return None
    if root_path is None:
        root_path = os.path.join(ctx.loader.prefix, "html")  # nginx's default root
    elif alias_path is None:
        root_path = root_path.rstrip("/") or "/"
    prefix = ""
    if alias_path is not None and here.get("regex") is None:
        prefix = here.get("pattern", "")
    nofollow, start = ctx.inherited("disable_symlinks", (False, ""))
    if start and not start.startswith("$"):
        start = _path(ctx, start)
    return StaticConf(
        root=root_path,
        alias=alias_path is not None,
        prefix=prefix,
        index=ctx.inherited("index", ("index.html",)),
        try_files=tries,
        sendfile=ctx.inherited("sendfile", False),
        etag=ctx.inherited("etag", True),
        if_modified_since=ctx.inherited("if_modified_since", "exact"),
        max_ranges=ctx.inherited("max_ranges", -1),
        disable_symlinks=nofollow,
        symlinks_from=start,
        log_not_found=ctx.inherited("log_not_found", True),
        types=ctx.inherited("types", DEFAULT_TYPES),  # "types {}" (empty) is kept: no type known
    )
