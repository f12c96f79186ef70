"""Config text → a tree of `Stmt`, includes expanded.

Owns the statements (`Stmt`), unescaping, ``include`` and the files read; the
syntax itself is lalr.py's (lark's LALR parser over grammar.lark, imported only
when a text is parsed for real), and a text parsed before comes from the
statement cache (stmtcache.py) when the caller passes one. Knows nothing of what
a directive means (that is directives.py).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyngx.conf.stmtcache import StmtCache

MAX_INCLUDE_DEPTH = 32
MAX_DEPTH = 64  # nested blocks (nginx needs 4: http, server, location, and one more if nested)


class ConfError(Exception):
    """A mistake in the configuration; str() is ``MESSAGE in FILE:LINE`` as nginx prints it."""

    def __init__(self, message: str, file: str, line: int) -> None:
        super().__init__(message, file, line)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if not self.file:  # the main file itself is missing: nginx names it in the message only
            return self.message
        if not self.line:  # -g directives have no line, as nginx says "in command line"
            return f"{self.message} in {self.file}"
        return f"{self.message} in {self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Stmt:
    """One directive as written: ``name args;``, ``name args { block }`` or a Python block."""

    name: str
    args: tuple[str, ...]
    block: tuple[Stmt, ...] | None  # None: the statement ended with ";"
    code: str | None  # the raw Python of a *_by_python_block
    file: str  # the path as shown in messages
    line: int
    path: str = ""  # the absolute path of the file (filename of compiled Python)
    code_line: int = 0  # the line of the "{" that opens the Python


def display_path(path: str) -> str:
    """How messages name a file: relative to the current directory when under it, as typed."""
    try:
        cwd = os.getcwd()
    except OSError:
        return path
    if path.startswith(cwd + os.sep):
        return path[len(cwd) + 1:]
    return path


# -- escapes --

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
_ESCAPE_RE = re.compile(r"\\(.)", re.S)


def unescape(word: str) -> str:
    """nginx's escapes: \\" \\' \\\\ \\n \\t \\r; any other backslash stays as written."""
    if "\\" not in word:
        return word
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), word)


def arg_value(kind: str, text: str) -> str:
    """The argument a WORD or STRING token stands for: quotes off, escapes read."""
    return unescape(text[1:-1] if kind == "STRING" else text)


def parse_text(text: str, file: str, path: str = "", cache: StmtCache | None = None) -> list[Stmt]:
    """The statements of TEXT (no include expansion), as lark's parser reads it (lalr.py).

    With CACHE, a text parsed before under the same FILE and PATH is not parsed again, and
    a text parsed now is remembered. Raises ConfError naming FILE, in nginx's words.
    """
    if cache is not None:
        stmts = cache.get(text, file, path)
        if stmts is not None:
            return stmts
    from pyngx.conf import lalr  # lark: only when a text is parsed for real

    stmts = lalr.parse(text, file, path)
    if cache is not None:
        cache.put(text, file, path, stmts)
    return stmts


# -- files and include --

def read_file(path: str, shown: str, where: tuple[str, int]) -> str:
    """The text of PATH; an unreadable file is nginx's ``open() "PATH" failed (errno: reason)``."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # an editor's byte-order mark is not a directive
            return f.read()
    except OSError as exc:
        raise ConfError(f'open() "{shown}" failed ({exc.errno}: {exc.strerror})', *where) from None
    except ValueError as exc:  # a NUL in the name; UnicodeDecodeError is a ValueError too, caught below
        if isinstance(exc, UnicodeDecodeError):
            raise ConfError(f'"{shown}" is not UTF-8 text ({exc.reason})', *where) from None
        raise ConfError(f'open() "{repr(shown)[1:-1]}" failed ({exc})', *where) from None


def parse_file(path: str, files: list[str], where: tuple[str, int] = ("", 0),
               cache: StmtCache | None = None) -> list[Stmt]:
    """Parse the file at absolute PATH and every file it includes (relative to its directory)."""
    shown = display_path(path)
    files.append(path)
    text = read_file(path, shown, where)
    stmts = parse_text(text, shown, path, cache)
    if "include" not in text:  # nothing to expand (the common case, and a large file's fast path)
        return stmts
    return expand(stmts, os.path.dirname(path), files, 0, cache)


def expand(stmts: list[Stmt] | tuple[Stmt, ...], base: str, files: list[str], depth: int,
           cache: StmtCache | None = None) -> list[Stmt]:
    """Replace every ``include GLOB;`` by the statements of the files it names, sorted."""
    out: list[Stmt] = []
    for st in stmts:
        if st.name == "include" and st.code is None:
            out.extend(_include(st, base, files, depth, cache))
        elif st.block:
            out.append(replace_block(st, tuple(expand(st.block, base, files, depth, cache))))
        else:
            out.append(st)
    return out


def replace_block(st: Stmt, block: tuple[Stmt, ...]) -> Stmt:
    return Stmt(st.name, st.args, block, st.code, st.file, st.line, st.path, st.code_line)


def _include(st: Stmt, base: str, files: list[str], depth: int, cache: StmtCache | None) -> list[Stmt]:
    where = (st.file, st.line)
    if st.block is not None:
        raise ConfError('directive "include" is not terminated by ";"', *where)
    if len(st.args) != 1:
        raise ConfError('invalid number of arguments in "include" directive', *where)
    if depth >= MAX_INCLUDE_DEPTH:
        raise ConfError(f"include nesting is deeper than {MAX_INCLUDE_DEPTH} files", *where)
    pattern = os.path.join(base, st.args[0])
    # nginx: a glob may match nothing; a plain name must exist.
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    out: list[Stmt] = []
    for path in paths:
        if os.path.isdir(path):
            continue
        files.append(path)
        shown = display_path(path)
        stmts = parse_text(read_file(path, shown, where), shown, path, cache)
        out.extend(expand(stmts, base, files, depth + 1, cache))
    return out
