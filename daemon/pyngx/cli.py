"""The ``pyngx`` command: argv → one action (serve, -t, -T, -s, -e, -v, -V).

The only module that writes to the terminal and chooses exit codes. Messages are
nginx's (``pyngx: [emerg] MSG in FILE:LINE``); a user mistake never shows a traceback.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyngx import conf
from pyngx.conf import values
from pyngx.conf.handlers import SHDICT_MAX, SHDICT_MIN
from pyngx.conf.parse import display_path

NAME = "pyngx"
DEFAULT_CONF = "conf/pyngx.conf"
SIGNALS = ("stop", "quit", "reopen", "reload")
DEPENDENCIES = ("lark", "msgpack", "setproctitle", "httptools", "uvloop")
USAGE = """\
Usage: pyngx [-?hvVtTq] [-s signal] [-p prefix] [-c filename] [-g directives]
             [--shdict 'NAME SIZE']... [-e code]

Options:
  -?,-h,--help  : this help
  -v            : show version and exit
  -V            : show version, Python, dependencies and the C extensions in use, then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to a master process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: the current directory)
  -c filename   : set configuration file (default: conf/pyngx.conf)
  -g directives : set global directives out of configuration file
  -e code       : run Python code once in a single process (like resty -e)
  --shdict 'NAME SIZE' : a shared dict for -e (may repeat)
"""


class UsageError(Exception):
    """A bad command line; str() is the message after ``pyngx: ``."""


@dataclass(slots=True)
class Options:
    prefix: str | None = None
    conf: str | None = None
    extra: list[str] = field(default_factory=list)
    test: bool = False
    dump: bool = False
    quiet: bool = False
    version: int = 0  # 1: -v, 2: -V
    signal: str | None = None
    code: str | None = None
    shdicts: list[tuple[str, int]] = field(default_factory=list)
    help: bool = False


_WITH_VALUE = {"-p": "prefix", "-c": "conf", "-g": "extra", "-s": "signal", "-e": "code", "--shdict": "shdicts"}
_FLAGS = {"t": "test", "T": "dump", "q": "quiet", "h": "help", "?": "help"}


def parse_args(argv: Sequence[str]) -> Options:
    """nginx's option syntax: ``-p PREFIX`` or ``-pPREFIX``, flags may be grouped (``-tq``). Raises UsageError."""
    opts = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--help":
            opts.help = True
        elif arg == "--shdict" or arg[:2] in _WITH_VALUE and len(arg) >= 2:
            key = "--shdict" if arg == "--shdict" else arg[:2]
            value = arg[len(key):] if arg != "--shdict" else ""
            if not value:
                if not args:
                    raise UsageError(f'option "{key}" requires {_WITH_VALUE[key]}')
                value = args.pop(0)
            _set_value(opts, key, value)
        elif arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
            for ch in arg[1:]:
                if ch in _FLAGS:
                    setattr(opts, _FLAGS[ch], True)
                elif ch in "vV":
                    opts.version = max(opts.version, 2 if ch == "V" else 1)
                else:
                    raise UsageError(f'invalid option: "{arg[1:]}"')
        else:
            raise UsageError(f'invalid option: "{arg}"')
    return opts


def _set_value(opts: Options, key: str, value: str) -> None:
    if key == "-g":
        opts.extra.append(value)
    elif key == "--shdict":
        opts.shdicts.append(_shdict(value))
    elif key == "-s":
        if value not in SIGNALS:
            raise UsageError(f'invalid option: "-s {value}"')
        opts.signal = value
    else:
        setattr(opts, _WITH_VALUE[key], value)


def _shdict(text: str) -> tuple[str, int]:
    parts = text.split()
    try:
        if len(parts) != 2:
            raise values.Invalid("")
        size = values.size(parts[1])
        if not SHDICT_MIN <= size < SHDICT_MAX:
            raise values.Invalid("")
        return parts[0], size
    except values.Invalid:
        raise UsageError(f"invalid --shdict \"{text}\", it must be 'NAME SIZE' with SIZE from 8k to 4g") from None


def version_text(full: bool) -> str:
    """-v: ``pyngx version: pyngx/X.Y.Z``; -V adds Python and the dependencies."""
    from pyngx import __version__

    lines = [f"{NAME} version: {NAME}/{__version__}"]
    if full:
        import platform  # only here: its import compiles nine regexes, a start's worth avoiding

        lines.append(f"built with Python {platform.python_version()} ({platform.python_implementation()})")
        lines.append("dependencies: " + ", ".join(f"{dep} {_dist_version(dep)}" for dep in DEPENDENCIES))
        lines.append(f"shared dict engine: {_shdict_engine()}")
        lines.append(f"plain HTTP requests: {_http_path()}")
    return "\n".join(lines)


def _http_path() -> str:
    """Which path answers plain HTTP requests: the C extension, or Python and why."""
    from importlib.util import find_spec

    if find_spec("pyngx.http._fast") is None:
        return "Python (the C extension pyngx.http._fast was not built)"
    if os.environ.get("PYNGX_HTTP_PURE") == "1":
        return "Python (PYNGX_HTTP_PURE=1; the C extension is built)"
    return "C extension (pyngx.http._fast)"


def _shdict_engine() -> str:
    """Which engine runs ``ngx.shared``: the C extension, or pure Python and why."""
    from pyngx.shm import shdict

    if not shdict.c_available():
        return "pure Python (the C extension pyngx.shm._shdict was not built)"
    if os.environ.get("PYNGX_SHDICT_PURE") == "1":
        return "pure Python (PYNGX_SHDICT_PURE=1; the C extension is built)"
    return "C extension (pyngx.shm._shdict)"


def _dist_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _err(message: str) -> None:
    sys.stderr.write(f"{NAME}: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = parse_args(args)
    except UsageError as exc:
        _err(str(exc))
        return 1
    if opts.help:
        sys.stderr.write(version_text(False) + "\n" + USAGE)
        return 0
    if opts.version:
        sys.stderr.write(version_text(opts.version == 2) + "\n")
        if not (opts.test or opts.dump):
            return 0
    try:
        prefix = os.path.abspath(opts.prefix if opts.prefix is not None else ".")
    except OSError as exc:  # the current directory was removed
        _err(f"[emerg] getcwd() failed ({exc.errno}: {exc.strerror})")
        return 1
    if opts.code is not None:
        return _run_code(opts, prefix)
    conf_path = opts.conf if opts.conf is not None else DEFAULT_CONF
    try:
        return _dispatch(opts, prefix, conf_path, [sys.argv[0], *args])
    except KeyboardInterrupt:
        return 1


def _dispatch(opts: Options, prefix: str, conf_path: str, argv: list[str]) -> int:
    shown = display_path(os.path.normpath(os.path.join(os.path.abspath(prefix), conf_path)))
    try:
        config = conf.load(conf_path, prefix, opts.extra, reuse=not (opts.test or opts.dump))
    except conf.ConfError as exc:
        _err(f"[emerg] {exc}")
        if opts.test or opts.dump:
            _err(f"configuration file {shown} test failed")
        return 1
    if opts.test or opts.dump:
        return _test(opts, config, shown, conf_path, prefix)
    if opts.signal is not None:
        from pyngx.proc import signaller

        return signaller.send(config, opts.signal)
    from pyngx.proc import master

    return master.serve(config, argv, conf_path, prefix, opts.extra)


def _test(opts: Options, config: conf.Config, shown: str, conf_path: str, prefix: str) -> int:
    """-t / -T: the config parsed; now run init_by_python as nginx -t runs init_by_lua."""
    from pyngx.proc import boot, cycle

    try:
        cycle.check(config)
        boot.check_files(config)  # nginx -t opens the logs and the pid file too
    except Exception as exc:  # noqa: BLE001 - CycleError, or user code failing in init_by_python
        _err(f"[emerg] {exc}")
        _err(f"configuration file {shown} test failed")
        return 1
    if not opts.quiet:
        _err(f"the configuration file {shown} syntax is ok")
        _err(f"configuration file {shown} test is successful")
    if opts.dump:
        try:
            sys.stdout.write(conf.dump(conf_path, prefix))
        except conf.ConfError as exc:
            _err(f"[emerg] {exc}")
            return 1
        sys.stdout.flush()
    return 0


def _run_code(opts: Options, prefix: str) -> int:
    from pyngx.proc import single

    assert opts.code is not None
    return single.run_code(opts.code, opts.shdicts, prefix)
