"""pyngx.conf.pycode: Python of a config block compiled at the config's own line numbers."""
from __future__ import annotations

import asyncio
import traceback
from typing import Any

import pytest

from pyngx.conf import pycode
from pyngx.conf.model import HANDLER_NAME, Chunk

FILE = "/etc/pyngx/pyngx.conf"


def run(chunk: Chunk, ns: dict[str, Any] | None = None) -> dict[str, Any]:
    ns = {} if ns is None else ns
    result = eval(chunk.code, ns) if chunk.kind == "module" else None
    if chunk.kind == "module" and chunk.is_async:
        asyncio.run(result)
    if chunk.kind == "handler":
        exec(chunk.code, ns)
        out = ns[HANDLER_NAME]()
        if chunk.is_async:
            asyncio.run(out)
    return ns


def failing_line(chunk: Chunk) -> tuple[str, int, str]:
    with pytest.raises(ZeroDivisionError) as info:
        run(chunk)
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    return frame.filename, frame.lineno or 0, frame.line or ""


BODIES = {  # the line of "1 / 0", counting the block's first line as 1
    "plain": ("\n    x = 1\n    1 / 0\n", 3),
    "nested function": ("\n    def f():\n        return 1 / 0\n    f()\n", 3),
    "class body": ("\n    class A:\n        y = 1 / 0\n", 3),
    "lambda": ("\n    f = lambda: 1 / 0\n    f()\n", 2),
    "comprehension": ("\n    [1 / 0 for _ in range(1)]\n", 2),
    "triple-quoted": ('\n    s = """\nat column 0\n    """\n    1 / 0\n', 5),
    "continuation": ("\n    x = 1 + \\\n        2\n    1 / 0\n", 4),
    "tabs": ("\n\tx = 1\n\t1 / 0\n", 3),
    "one line": (" 1 / 0 ", 1),
    "async text, sync code": ('\n    s = "await async"\n    1 / 0\n', 3),
}


@pytest.mark.parametrize("kind", ["handler", "module"])
@pytest.mark.parametrize("name", list(BODIES))
@pytest.mark.parametrize("first_line", [1, 2, 500])
def test_traceback_lines_are_the_config_lines(kind: Any, name: str, first_line: int) -> None:
    source, line = BODIES[name]
    chunk = pycode.compile_chunk(source, FILE, first_line, kind)
    assert (chunk.kind, chunk.file, chunk.line, chunk.is_async) == (kind, FILE, first_line, False)
    filename, lineno, _ = failing_line(chunk)
    assert (filename, lineno) == (FILE, first_line + line - 1)


@pytest.mark.parametrize("kind", ["handler", "module"])
@pytest.mark.parametrize("source, line, message", [
    ("\n    x = (\n", 2, "'(' was never closed"),
    ("\n    x = 1\n    y = = 2\n", 3, "invalid syntax"),
    ("\n    x = 1\n        y = 2\n", 3, "unexpected indent"),
    ("\n    def f(:\n        pass\n", 2, "invalid syntax"),
])
def test_syntax_errors_carry_the_config_line(kind: Any, source: str, line: int, message: str) -> None:
    with pytest.raises(SyntaxError) as info:
        pycode.compile_chunk(source, FILE, 40, kind)
    assert (info.value.filename, info.value.lineno, info.value.msg) == (FILE, 40 + line - 1, message)


@pytest.mark.parametrize("source, is_async", [
    ("await f()", True),
    ("async for x in g(): pass", True),
    ("async with c(): pass", True),
    ("x = [y async for y in g()]", True),
    ("async def h():\n    await f()", False),
    ("def h():\n    return 'await'", False),
    ("x = lambda: 1", False),
])
def test_top_level_await_makes_a_coroutine(source: str, is_async: bool) -> None:
    for kind in ("handler", "module"):
        assert pycode.compile_chunk(source, FILE, 1, kind).is_async is is_async  # type: ignore[arg-type]


def test_async_handler_runs_and_returns() -> None:
    seen: list[str] = []
    src = "\n    await asyncio.sleep(0)\n    seen.append('a')\n    if seen:\n        return\n    seen.append('b')\n"
    chunk = pycode.compile_chunk(src, FILE, 3, "handler")
    assert chunk.is_async
    run(chunk, {"asyncio": asyncio, "seen": seen})
    assert seen == ["a"]


def test_handler_names_are_locals_of_one_call() -> None:
    chunk = pycode.compile_chunk("\n    x = 1\n    out.append(x)\n", FILE, 1, "handler")
    out: list[int] = []
    ns = run(chunk, {"out": out})
    assert out == [1] and "x" not in ns


def test_module_names_are_globals() -> None:
    ns = run(pycode.compile_chunk("\n    import os\n    X = {'a': 1}\n", FILE, 1, "module"))
    assert ns["X"] == {"a": 1} and "os" in ns


def test_strings_keep_their_content() -> None:
    src = '\n    A = """x\n  y\nz"""\n    B = "p\\\n q"\n    out.append((A, B))\n'
    for kind in ("handler", "module"):
        out: list[tuple[str, str]] = []
        run(pycode.compile_chunk(src, FILE, 1, kind), {"out": out})  # type: ignore[arg-type]
        assert out == [("x\n  y\nz", "p q")]


@pytest.mark.parametrize("source", ["", "   ", "\n   # only a comment\n  "])
def test_empty_bodies_compile(source: str) -> None:
    run(pycode.compile_chunk(source, FILE, 7, "handler"))
    run(pycode.compile_chunk(source, FILE, 7, "module"))


def test_shift_lines_moves_nested_code() -> None:
    code = compile("def f():\n    def g():\n        pass\n", "x", "exec")
    moved = pycode.shift_lines(code, 10)
    f = next(c for c in moved.co_consts if hasattr(c, "co_code"))
    g = next(c for c in f.co_consts if hasattr(c, "co_code"))
    assert (moved.co_firstlineno, f.co_firstlineno, g.co_firstlineno) == (11, 11, 12)


@pytest.mark.parametrize("source", [
    "\n    await asyncio.sleep(0)\n    1 / 0\n",
    "\n    async def f():\n        return 1 / 0\n    await f()\n",
    "\n    xs = [x async for x in agen()]\n    1 / 0\n",
])
def test_async_handlers_from_text_and_from_the_tree_agree(source: str) -> None:
    async def agen() -> Any:
        yield 1

    quick = pycode.compile_chunk(source, FILE, 20, "handler")
    tree = pycode._compile_tree(source, FILE, 20, "handler")
    assert quick.is_async and tree.is_async
    lines = []
    for chunk in (quick, tree):
        ns: dict[str, Any] = {"asyncio": asyncio, "agen": agen}
        exec(chunk.code, ns)
        with pytest.raises(ZeroDivisionError) as info:
            asyncio.run(ns[HANDLER_NAME]())
        lines.append(traceback.extract_tb(info.value.__traceback__)[-1].lineno)
    assert lines[0] == lines[1]
