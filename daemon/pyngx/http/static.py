"""Serving files: nginx's static, index and try_files handlers.

Owns mapping a URI to a path under ``root``/``alias`` (no path leaves it: the
URI is already normalised, and a ``..`` that an alias or a variable brings in is
refused), opening it without hanging or following symlinks when told not to,
``index`` and ``try_files`` with their internal redirects (at most 10, as
nginx), and nginx's answers: 301 for a directory without its slash, 403, 404,
405. The response itself (validators, ranges, the body out with sendfile) is
`pyngx.http.sendfile`'s. Knows nothing of the parser: the connection calls
``serve`` or ``try_files`` and gets ``finish`` called back.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes

from pyngx import log
from pyngx.conf.model import StaticConf
from pyngx.http import replies, sendfile
from pyngx.http.variables import Template, _host, assign
from pyngx.runtime import core

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange
    from pyngx.http.protocol import HttpProtocol
    from pyngx.http.route import Route

MAX_REDIRECTS = 10  # nginx: NGX_HTTP_MAX_URI_CHANGES
# O_NONBLOCK: a FIFO opens at once (then is refused); O_NOCTTY: a tty is never taken as ours
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_NOT_FOUND = frozenset((errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG))
_FORBIDDEN = frozenset((errno.EACCES, errno.ELOOP, errno.EMLINK))
_METHODS = frozenset((b"GET", b"HEAD", b"POST"))
_URI_SAFE = b"/:@!$&'()*+,;=-._~"


class Files:
    """A location's `StaticConf`, prepared once: its root as bytes or a template, its try_files."""

    __slots__ = ("conf", "root", "root_tpl", "prefix", "tries", "last", "last_tpl", "types", "ctype", "links_from")

    def __init__(self, conf: StaticConf, default_type: str) -> None:
        self.conf = conf
        self.root_tpl = Template(conf.root) if "$" in conf.root else None
        self.root = conf.root.encode("utf-8", "surrogateescape")
        self.prefix = conf.prefix.encode("utf-8", "surrogateescape")
        self.tries = tuple(Template(t) for t in conf.try_files[:-1])
        self.last = conf.try_files[-1] if conf.try_files else ""
        self.last_tpl = Template(self.last)  # the fallback URI, when it is one
        self.types = conf.types
        self.ctype = default_type
        # disable_symlinks from=: "$document_root" is the root (or alias); other variables: check from "/"
        start = self.root if conf.symlinks_from == "$document_root" and self.root_tpl is None else \
            conf.symlinks_from.encode("utf-8", "surrogateescape")
        self.links_from = b"" if start.startswith(b"$") else start.rstrip(b"/")

    def document_root(self, ex: Exchange) -> bytes:
        """nginx's ``$document_root``: the root (or alias) for EX, its variables expanded."""
        root = self.root
        if self.root_tpl is not None:
            root = self.root_tpl.render(ex).encode("utf-8", "surrogateescape")
            if not root.startswith(b"/"):
                root = os.path.join(core.RT.prefix.encode(), root)
            if not self.conf.alias:
                root = root.rstrip(b"/")
        return root

    def path(self, ex: Exchange, uri: str) -> bytes | None:
        """The file path for URI, or None when it would leave the root (or alias)."""
        raw = uri.encode("utf-8", "surrogateescape")
        root = self.root if self.root_tpl is None else self.document_root(ex)
        if not self.conf.alias:
            path = root + raw
        elif self.prefix:
            if not raw.startswith(self.prefix):
                return None
            path = root + raw[len(self.prefix):]
        else:
            path = root  # regex location: the alias is the whole path
        if b"/.." in path and (b"/../" in path or path.endswith(b"/..")):
            return None  # "location /i { alias /d/; }" and "/i../x": nginx would leave the alias here
        return path

    def content_type(self, uri: str) -> str:
        """The type for URI's extension (nginx's ``types``), else ``default_type``."""
        name = uri.rpartition("/")[2]
        dot = name.rfind(".")
        if dot <= 0:  # none, or a dot file: nginx's ngx_http_set_exten finds no extension
            return self.ctype
        found = self.types.get(name[dot + 1:].lower())
        return found if found is not None else self.ctype


# -- opening --

def open_file(files: Files, path: bytes, flags: int = _OPEN) -> int:
    """An fd for PATH; with ``disable_symlinks on`` no component after ``from=`` may be a link.

    Raises OSError (ELOOP for a link).
    """
    conf = files.conf
    if not conf.disable_symlinks:
        return os.open(path, flags)
    start = files.links_from
    if start and path.startswith(start + b"/"):
        base, rest = start, path[len(start) + 1:]
    else:
        base, rest = b"/", path.lstrip(b"/")
    parts = rest.split(b"/")
    dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            if part:
                fd = os.open(part, _DIR, dir_fd=dfd)  # a link here is ENOTDIR (a 404), as nginx's openat()
                os.close(dfd)
                dfd = fd
        return os.open(parts[-1] or b".", flags | os.O_NOFOLLOW, dir_fd=dfd)
    finally:
        os.close(dfd)


def _exists(files: Files, path: bytes, want_dir: bool) -> bool:
    """try_files' test: PATH is a file (or, for ``$uri/``, a directory)."""
    try:
        fd = open_file(files, path)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode) == want_dir
    finally:
        os.close(fd)


# -- the handlers --
# What a handler leaves to the connection (`pyngx.http.protocol.HttpProtocol.served`):
FILLED = "filled"  # EX holds its answer: the connection sends it and ends the exchange
SENDING = "sending"  # the file's writer (`pyngx.http.sendfile`) sends it and ends the exchange
RERUN = "rerun"  # EX has a new location that is not files: the connection runs it
FOUND = "found"  # (try_files) a file was found: on to the location's content


def serve(conn: HttpProtocol, ex: Exchange, route: Route, depth: int = 0) -> str:
    """The content of a location that serves files: try_files first, then the file or the index.

    Returns what the connection does next: FILLED (send EX's answer), SENDING (the file's
    writer has it and ends it) or RERUN (EX has a new location that is not files: run it).
    """
    files = route.files
    assert files is not None
    if files.tries:
        verdict = try_files(conn, ex, route, depth)
        if verdict is not FOUND:
            return verdict
    if ex.method not in _METHODS:
        return _fill(ex, 405)
    if ex.uri.endswith("/"):
        return _index(conn, ex, files, depth)
    return _file(conn, ex, files)


def _file(conn: HttpProtocol, ex: Exchange, files: Files) -> str:
    path = files.path(ex, ex.uri)
    if path is None:
        return _outside(conn, ex)
    try:
        fd = open_file(files, path)
    except OSError as exc:
        return _refuse(conn, ex, files, path, exc.errno or 0, _opener(files))
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return _refuse(conn, ex, files, path, exc.errno or 0, "fstat()")
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        return _to_directory(conn, ex)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        _log(ex, log.ERR, f'"{_shown(path)}" is not a regular file')
        return _fill(ex, 404)
    if ex.method == b"POST":
        os.close(fd)
        return _fill(ex, 405)
    sendfile.respond(conn, ex, files, fd, st)
    return SENDING


def _index(conn: HttpProtocol, ex: Exchange, files: Files, depth: int) -> str:
    """ngx_http_index_module: redirect to the first index that exists; none → 403 (404 without the directory)."""
    uri = ex.uri
    base = files.path(ex, uri)
    if base is None:
        return _outside(conn, ex)
    first_err = 0
    for name in files.conf.index:
        if name.startswith("/"):
            return redirect(conn, ex, name, None, depth)
        path = base + name.encode("utf-8", "surrogateescape")
        try:
            os.close(open_file(files, path))
        except OSError as exc:
            err = exc.errno or 0
            if err in _FORBIDDEN:
                return _refuse(conn, ex, files, path, err, _opener(files))
            first_err = first_err or err
            continue
        return redirect(conn, ex, uri + name, None, depth)
    try:
        os.close(open_file(files, base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as exc:
        err = exc.errno or first_err
        if err in _NOT_FOUND:
            if files.conf.log_not_found:
                _log(ex, log.ERR, f'"{_shown(base)}{files.conf.index[0]}" is not found ({err}: {os.strerror(err)})')
            return _fill(ex, 404)
        return _refuse(conn, ex, files, base, err, _opener(files))
    _log(ex, log.ERR, f'directory index of "{_shown(base)}" is forbidden')
    return _fill(ex, 403)


def try_files(conn: HttpProtocol, ex: Exchange, route: Route, depth: int = 0) -> str:
    """nginx's try-files phase: FOUND when a file was found (``$uri`` is now its URI: go on to the
    content), else what `serve` returns for the answer or the redirect."""
    files = route.files
    if files is None or not files.tries:
        return FOUND
    for tpl in files.tries:
        name = tpl.render(ex)
        want_dir = name.endswith("/") and len(name) > 1
        path = files.path(ex, name)
        if path is not None and _exists(files, (path.rstrip(b"/") or b"/") if want_dir else path, want_dir):
            ex.uri = name
            return FOUND
    last = files.last
    if last.startswith("="):
        return _fill(ex, int(last[1:]))
    if last.startswith("@"):
        return redirect(conn, ex, last, None, depth)
    target = files.last_tpl.render(ex)
    uri, sep, args = target.partition("?")
    return redirect(conn, ex, uri, args if sep else None, depth)


def redirect(conn: HttpProtocol, ex: Exchange, uri: str, args: str | None, depth: int) -> str:
    """An internal redirect: find the location of URI (or the named ``@location``); `serve`'s verdict."""
    if depth >= MAX_REDIRECTS:
        _log(ex, log.ERR, f'rewrite or internal redirection cycle while internally redirecting to "{uri}"')
        return _fill(ex, 500)
    server = conn.server
    assert server is not None
    if uri.startswith("@"):
        route = server.named.get(uri)
        if route is None:
            _log(ex, log.CRIT, f'could not find named location "{uri}"')
            return _fill(ex, 500)
        ex.route, ex.match = route, None
    else:
        ex.uri = uri
        if args is not None:
            ex.args = args
        ex.route, ex.match = server.find(uri)
    return dispatch(conn, ex, depth + 1)


def dispatch(conn: HttpProtocol, ex: Exchange, depth: int) -> str:
    """Serve EX's (new) location: files here; anything else is RERUN by the connection."""
    route = ex.route
    if route is None:
        return _fill(ex, 404)
    if route.kind == "static":
        for name, template in route.sets:
            assign(ex, name, template.render(ex))
        return serve(conn, ex, route, depth)
    return RERUN


# -- answers --

def _to_directory(conn: HttpProtocol, ex: Exchange) -> str:
    """A directory asked without its slash: 301 to the URI with ``/`` (and the args), absolute as nginx."""
    host = _host(ex)
    if not host and conn.sockname is not None:
        host = str(conn.sockname[0])
    port = conn.sockname[1] if isinstance(conn.sockname, tuple) else 80
    where = quote_from_bytes(ex.uri.encode("utf-8", "surrogateescape") + b"/", _URI_SAFE)
    if ex.args:
        where += "?" + ex.args
    location = f"http://{host}{'' if port == 80 else f':{port}'}{where}"
    ex.status = 301
    ex.out = [replies.page(301)]
    ex.out_headers = {"content-type": ("Content-Type", "text/html"), "location": ("Location", location)}
    return FILLED


def _opener(files: Files) -> str:
    return "openat()" if files.conf.disable_symlinks else "open()"


def _outside(conn: HttpProtocol, ex: Exchange) -> str:
    """The path would leave the root or alias (a ``..`` brought back by an alias or a variable): 404."""
    _log(ex, log.ERR, f'the path of "{ex.uri}" leaves the root or alias, refused')
    return _fill(ex, 404)


def _refuse(conn: HttpProtocol, ex: Exchange, files: Files, path: bytes, err: int, call: str = "open()") -> str:
    """nginx's answer to a failed open: 404 (logged when log_not_found), 403, else 500 (crit)."""
    if err in _NOT_FOUND:
        if files.conf.log_not_found:
            _log(ex, log.ERR, f'{call} "{_shown(path)}" failed ({err}: {os.strerror(err)})')
        return _fill(ex, 404)
    shown = _shown(path)
    if err in _FORBIDDEN:
        _log(ex, log.ERR, f'{call} "{shown}" failed ({err}: {os.strerror(err)})')
        return _fill(ex, 403)
    _log(ex, log.CRIT, f'{call} "{shown}" failed ({err}: {os.strerror(err)})')
    return _fill(ex, 500)


def _fill(ex: Exchange, status: int) -> str:
    sendfile.fill(ex, status)
    return FILLED


def _shown(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _log(ex: Exchange, level: int, message: str) -> None:
    """An error-log line with nginx's request context."""
    peer = ex.conn.peer
    client = peer[0] if isinstance(peer, tuple) and peer else "unix"
    host = ex.header(b"host")
    tail = f', host: "{host.decode("latin-1")}"' if host else ""
    log.log(level, f'{message}, client: {client}, request: "{ex.request_line()}"{tail}')
