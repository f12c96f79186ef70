"""Compile the Python of a config block or file into a `Chunk`.

The source is dedented and its line numbers are moved to the config file's
own, so a SyntaxError or a traceback names the config file and the line the
user sees in an editor.
"""
from __future__ import annotations

import ast
import textwrap
from types import CodeType

from pyngx.conf.model import HANDLER_NAME, Chunk, ChunkKind

_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def compile_chunk(source: str, filename: str, first_line: int, kind: ChunkKind) -> Chunk:
    """Compile SOURCE, whose first line is line FIRST_LINE of FILENAME.

    Raises SyntaxError (with the config's file and line) for bad Python.
    """
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
