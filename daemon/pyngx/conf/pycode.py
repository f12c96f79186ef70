"""Compile the Python of a config block or file into a `Chunk`.

The source is dedented and its line numbers are moved to the config file's
own, so a SyntaxError or a traceback names the config file and the line the
user sees in an editor.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
from types import CodeType

from pyngx.conf.model import HANDLER_NAME, Chunk, ChunkKind

_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


_CO_COROUTINE = inspect.CO_COROUTINE
# Text the quick path cannot wrap by indenting each line: the inside of a multi-line
# string (or of a backslash-continued one) would change, and tabs would mix with the space.
_NOT_INDENTABLE = re.compile(r'"""|\'\'\'|\\\n|\t')
_HEADS = (f"def {HANDLER_NAME}():\n", f"async def {HANDLER_NAME}():\n")


def compile_chunk(source: str, filename: str, first_line: int, kind: ChunkKind) -> Chunk:
    """Compile SOURCE, whose first line is line FIRST_LINE of FILENAME.

    Raises SyntaxError (with the config's file and line) for bad Python.
    """
    if kind == "module":
        code = _compile_module(source, filename, first_line)
        return Chunk(code, kind, bool(code.co_flags & _CO_COROUTINE), filename, first_line)
    if _NOT_INDENTABLE.search(source) is None:
        # A plain def first: it compiles exactly when the block does not await at top level
        # (await, async for/with and async comprehensions are errors in a plain function).
        for is_async in (False, True) if "async" in source or "await" in source else (False,):
            code = _quick_handler(source, filename, first_line, is_async)
            if code is not None:
                return Chunk(code, kind, is_async, filename, first_line)
    return _compile_tree(source, filename, first_line, kind)


def _compile_module(source: str, filename: str, first_line: int) -> CodeType:
    """Module code straight from text, its lines moved to the file's afterwards."""
    try:
        code = compile(textwrap.dedent(source), filename, "exec", flags=_FLAGS, dont_inherit=True)
    except SyntaxError:
        return _compile_tree(source, filename, first_line, "module").code  # the exact error, or the dedent fallback
    return shift_lines(code, first_line - 1)


def _quick_handler(source: str, filename: str, first_line: int, is_async: bool) -> CodeType | None:
    """The handler function compiled from text: the body indented one space more under a def line.

    No dedent is needed: Python takes the first code line's indentation as the body's. None
    when the text does not compile this way, e.g. a body of comments only (then the tree path
    compiles it, or says why not).
    """
    text = _HEADS[is_async] + " " + source.replace("\n", "\n ") + "\n"
    try:
        code = compile(text, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    # Wrapper line 2 is the block's first line.
    return shift_lines(code, first_line - 2)


def shift_lines(code: CodeType, delta: int) -> CodeType:
    """CODE with every line number (nested code objects too) moved by DELTA."""
    if not delta:
        return code
    consts = tuple(shift_lines(c, delta) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=max(0, code.co_firstlineno + delta), co_consts=consts)


def _compile_tree(source: str, filename: str, first_line: int, kind: ChunkKind) -> Chunk:
    """The exact path through the AST: any text Python accepts, and its errors at the config's lines."""
    try:
        tree = _parse(source, filename)
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += first_line - 1
        if getattr(exc, "end_lineno", None) is not None:
            exc.end_lineno += first_line - 1
        raise
    ast.increment_lineno(tree, first_line - 1)
    is_async = _awaits_at_top(tree)
    if kind == "module":
        code = compile(tree, filename, "exec", flags=_FLAGS, dont_inherit=True)
    else:
        code = _wrap_handler(tree, filename, first_line, is_async)
    return Chunk(code, kind, is_async, filename, first_line)


def _parse(source: str, filename: str) -> ast.Module:
    flags = _FLAGS | ast.PyCF_ONLY_AST
    try:
        return compile(textwrap.dedent(source), filename, "exec", flags=flags, dont_inherit=True)
    except IndentationError:
        # A triple-quoted string with lines at column 0 defeats dedent; take the
        # first code line's indentation as the block's, as Python would.
        lines = source.splitlines()
        first = next((ln for ln in lines if ln.strip()), "")
        indent = first[: len(first) - len(first.lstrip())]
        text = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines)
        return compile(text, filename, "exec", flags=flags, dont_inherit=True)


def _awaits_at_top(tree: ast.Module) -> bool:
    """True when the block itself (not a function inside it) awaits."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if isinstance(node, ast.comprehension) and node.is_async:
            return True
        if isinstance(node, _SCOPES):
            todo.extend(getattr(node, "decorator_list", ()))
            continue
        todo.extend(ast.iter_child_nodes(node))
    return False


def _wrap_handler(tree: ast.Module, filename: str, first_line: int, is_async: bool) -> CodeType:
    """Make the block the body of one function, so its names are per-request locals."""
    body = tree.body or [ast.Pass(lineno=first_line, col_offset=0, end_lineno=first_line, end_col_offset=0)]
    cls = ast.AsyncFunctionDef if is_async else ast.FunctionDef
    fn = cls(
        name=HANDLER_NAME,
        args=ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=body,
        decorator_list=[],
        returns=None,
        type_comment=None,
        lineno=first_line,
        col_offset=0,
        end_lineno=max(first_line, getattr(body[-1], "end_lineno", None) or first_line),
        end_col_offset=0,
    )
    module = ast.Module(body=[fn], type_ignores=[])
    return compile(module, filename, "exec", dont_inherit=True)
