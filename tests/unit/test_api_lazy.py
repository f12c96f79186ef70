"""`import pyngx` loads no API module; each loads on its first use, and ngx.req / ngx.shared stay objects."""
from __future__ import annotations

import subprocess
import sys

API = ("base", "request", "req", "flow", "timer", "shared", "worker", "process", "ipc", "events", "pipe", "shell")


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_pyngx_loads_no_api_module_nor_asyncio() -> None:
    loaded = _run("import sys, pyngx\n"
                  f"print(*[m for m in {API!r} if 'pyngx.' + m in sys.modules], 'asyncio' in sys.modules, 'lark' in sys.modules)")
    assert loaded == ["False", "False"]


def test_a_name_loads_its_module_on_first_use_and_is_kept() -> None:
    out = _run("import sys, pyngx as ngx\n"
               "before = 'pyngx.pipe' in sys.modules\n"
               "spawn = ngx.pipe.spawn\n"
               "print(before, 'pyngx.pipe' in sys.modules, 'pipe' in vars(ngx), ngx.pipe is sys.modules['pyngx.pipe'])")
    assert out == ["False", "True", "True", "True"]


def test_req_and_shared_stay_objects_whichever_module_is_imported_first() -> None:
    out = _run("import pyngx as ngx\n"
               "import pyngx.flow, pyngx.req, pyngx.shared  # binds pyngx/req.py and pyngx/shared.py on the package\n"
               "from pyngx.req import req\nfrom pyngx.shared import shared\n"
               "print(ngx.req is req, ngx.shared is shared, callable(ngx.req.get_method))")
    assert out == ["True", "True", "True"]


def test_every_name_of_all_resolves_and_a_wrong_one_is_an_attribute_error() -> None:
    out = _run("import pyngx as ngx\n"
               "missing = [n for n in ngx.__all__ if not hasattr(ngx, n)]\n"
               "try:\n    ngx.no_such_thing\nexcept AttributeError as e:\n    print(len(missing), 'AttributeError')\n")
    assert out == ["0", "AttributeError"]
