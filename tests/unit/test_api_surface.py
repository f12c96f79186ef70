"""The public surface: dir(ngx) is the API, and every public module says what it exports."""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import pyngx

PUBLIC = ["base", "request", "timer", "shared", "worker", "process", "ipc", "events", "pipe", "shell", "errors"]


def test_dir_ngx_shows_the_api_only() -> None:
    # the daemon's own rooms are imported in a running server; they set attributes on the package
    for room in ("pyngx.cli", "pyngx.proc.master", "pyngx.conf", "pyngx.http.server", "pyngx.shm.shdict"):
        importlib.import_module(room)
    shown = dir(pyngx)
    for internal in ("sys", "types", "Any", "annotations", "cli", "proc", "runtime", "conf", "http", "shm", "base",
                     "request", "_Ngx", "_request", "_worker"):
        assert internal not in shown, internal
    assert shown == sorted({*pyngx.__all__, "status", "ctx", "__version__"})
    for name in ("say", "log", "sleep", "timer", "shared", "ipc", "HTTP_OK", "ERR", "Error", "status", "ctx"):
        assert name in shown, name


def test_every_exported_name_exists_and_star_import_works() -> None:
    for name in pyngx.__all__:
        assert hasattr(pyngx, name), name
    assert {"HTTP_OK", "HTTP_NOT_FOUND", "OK", "DECLINED"} <= set(pyngx.__all__)
    # (it shadows print, exit and TimeoutError, as OpenResty's names do)
    code = "import sys\nfrom pyngx import *\nsys.stdout.write(f'{HTTP_OK} {callable(say)} {TimeoutError.__module__}')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["200", "True", "pyngx.errors"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_modules_declare_all(name: str) -> None:
    module = importlib.import_module(f"pyngx.{name}")
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"pyngx.{name} has no __all__"
    for attr in exported:
        getattr(module, attr)  # every name resolves
    own = [attr for attr, obj in vars(module).items()
           if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
           and getattr(obj, "__module__", None) == module.__name__]
    missing = sorted(set(own) - set(exported))
    assert not missing, f"pyngx.{name} defines public {missing} without listing them in __all__"
