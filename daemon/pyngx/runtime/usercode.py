"""Running the user's Python: the generation namespace, chunks, module purge.

Every Python block of one config generation runs in one namespace (a dict
holding ``ngx``), as every Lua chunk of OpenResty sees the same globals: what
init_by_python imports or defines is visible to init_worker_by_python and to
content handlers. Content blocks are compiled as one function each
(`pyngx.conf.pycode`), so what they assign is local to one request.
"""
from __future__ import annotations

import builtins
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pyngx.conf.model import HANDLER_NAME, Chunk
from pyngx.runtime import phase


def new_globals() -> dict[str, Any]:
    """A fresh namespace for one generation's blocks."""
    import pyngx  # the one allowed upward import: binds the ngx global

    return {"__name__": "__pyngx__", "__builtins__": builtins, "ngx": pyngx}


def run_module(chunk: Chunk, namespace: dict[str, Any], in_phase: str) -> None:
    """Run a module chunk that does not await (init_by_python in the master)."""
    token = phase.set(in_phase)
    try:
        if chunk.is_async:
            import asyncio

            asyncio.run(eval(chunk.code, namespace))  # noqa: S307 - the user's config code
        else:
            exec(chunk.code, namespace)  # noqa: S102 - the user's config code
    finally:
        phase.reset(token)


async def run_module_async(chunk: Chunk, namespace: dict[str, Any], in_phase: str) -> None:
    """Run a module chunk inside a running loop (init_worker_by_python, -e)."""
    token = phase.set(in_phase)
    try:
        if chunk.is_async:
            await eval(chunk.code, namespace)  # noqa: S307
        else:
            exec(chunk.code, namespace)  # noqa: S102
    finally:
        phase.reset(token)


def make_handler(chunk: Chunk, namespace: dict[str, Any]) -> Callable[[], Any]:
    """The function a content chunk defines, bound to NAMESPACE as its globals.

    Call it per request; when ``chunk.is_async`` the call returns a coroutine.
    """
    local: dict[str, Any] = {}
    exec(chunk.code, namespace, local)  # noqa: S102
    return local[HANDLER_NAME]


def user_dirs(python_path: Iterable[str], prefix: str) -> list[str]:
    """Directories whose modules belong to the user (reloaded on HUP)."""
    return [os.path.realpath(d) for d in (*python_path, prefix)]


def install_path(python_path: Iterable[str]) -> None:
    """Prepend python_path to sys.path (once each)."""
    for directory in reversed(list(python_path)):
        if directory in sys.path:
            sys.path.remove(directory)
        sys.path.insert(0, directory)


def purge_modules(dirs: Iterable[str]) -> list[str]:
    """Drop from sys.modules every module loaded from DIRS, so a new generation
    imports the code as it is now on disk (no stale imports after HUP).

    pyngx itself, the standard library and installed packages are never purged.
    Returns the names.
    """
    roots = tuple(d.rstrip(os.sep) + os.sep for d in dirs)
    keep = _kept_roots()
    gone = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or path.startswith(keep):  # most modules: no realpath() syscalls for them
            continue
        real = _realpath(path)
        if real.startswith(roots) and not real.startswith(keep) and "site-packages" not in real:
            del sys.modules[name]
            gone.append(name)
    importlib.invalidate_caches()
    return gone


_real: dict[str, str] = {}


def _realpath(path: str) -> str:
    real = _real.get(path)
    if real is None:
        real = _real[path] = os.path.realpath(path)
    return real


@functools.cache
def _kept_roots() -> tuple[str, ...]:
    """pyngx itself, the standard library and installed packages, as given and as
    resolved: never purged, even when the prefix is a parent of them (``-p /``)."""
    import sysconfig

    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sysconfig.get_paths()
    dirs = [d for d in (pkg, *(paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib"))) if d]
    both = {os.path.abspath(d) for d in dirs} | {os.path.realpath(d) for d in dirs}
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in both))


def module_files(dirs: Iterable[str]) -> list[str]:
    """The files of the user's modules loaded now from DIRS (what `purge_modules` would drop)."""
    roots = tuple(d.rstrip(os.sep) + os.sep for d in dirs)
    keep = _kept_roots()
    out = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and not path.startswith(keep):
            real = _realpath(path)
            if real.startswith(roots) and not real.startswith(keep) and "site-packages" not in real:
                out.append(path)
    return out


def read_sources(paths: Iterable[str]) -> dict[str, list[str]]:
    """The lines of each file in PATHS as it is now (unreadable ones are left out)."""
    import tokenize

    out = {}
    for path in dict.fromkeys(paths):
        try:
            opener = tokenize.open(path) if path.endswith(".py") else open(path, encoding="utf-8-sig")
            with opener as f:
                out[path] = f.read().splitlines(True)
        except (OSError, ValueError, SyntaxError):
            continue
    return out


def pin_sources(sources: dict[str, list[str]]) -> None:
    """Make tracebacks of this process quote SOURCES, not the files as they are on disk now.

    After the config was edited and reloaded, an old worker still draining runs the
    old code: its tracebacks must show the old lines. linecache never rechecks an
    entry whose mtime is None.
    """
    import linecache

    for path, lines in sources.items():
        linecache.cache[path] = (sum(map(len, lines)), None, lines, path)


def format_exception(exc: BaseException) -> str:
    """EXC's traceback from the first frame of the user's code on (pyngx's own frames that
    merely ran the code are noise to the user)."""
    import traceback

    pkg = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep
    tb = exc.__traceback__
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename).startswith(pkg):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))


def summary(exc: BaseException) -> str:
    """One line for EXC: its type and message, and the last frame's file and line."""
    import traceback

    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " ")
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{text} in {frames[-1].filename}:{frames[-1].lineno}" if frames else text
