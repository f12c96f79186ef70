r"""Config text → a tree of `Stmt`, includes expanded.

Owns the syntax (nginx's), read by a lexer and a small recursive parser:

    file:    item*
    item:    name arg* ";"                 a statement
           | name arg* "{" item* "}"       a block of statements
           | name arg* PYCODE              *_by_python_block { raw Python up to the matching "}" }
    name, arg: WORD | STRING
    WORD:    [^\s;{}"'#][^\s;{}]*        a bare word ends at whitespace, ";", "{" or "}"
    STRING:  "..." or '...' (backslash escapes)
    ignored: whitespace, and "#" to the end of the line where a word could start

The lexer hands the raw Python of a ``*_by_python_block`` to the parser as one PYCODE
token (pyblock.py finds its closing brace). Also unescaping; ``include``; nginx's wording
for syntax errors. Knows nothing of what a directive means (that is directives.py).
Pure standard library: no parser generator to import or tables to load at start.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pyngx.conf.pyblock import Unclosed, find_python_end

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


# -- the lexer: the terminals as one regex, and a Python block as one PYCODE token --

class Token:
    """A terminal as read: its kind (WORD STRING SEMICOLON LBRACE RBRACE PYCODE), text, offset and line."""

    __slots__ = ("type", "value", "start_pos", "line")

    def __init__(self, kind: str, value: str, start_pos: int, line: int) -> None:
        self.type, self.value, self.start_pos, self.line = kind, value, start_pos, line

    def __str__(self) -> str:
        return self.value


# The ignored text (blanks, comments) as an atomic prefix, then one terminal; their first
# characters never overlap. Atomic: a comment is never cut short to let a later terminal
# match (backtracking would read '#a "b" c;' followed by an unterminated quote as a statement).
_SKIP = r"""(?>(?:\s+|#[^\n]*)*)"""
_SCAN = re.compile(_SKIP + r"""(?:(?P<WORD>[^\s;{}"'#][^\s;{}]*)"""
                   r"""|(?P<STRING>(?:(?s:"(?:[^"\\]|\\.)*")|(?s:'(?:[^'\\]|\\.)*')))"""
                   r"""|(?P<SEMICOLON>;)|(?P<LBRACE>\{)|(?P<RBRACE>\})|(?P<END>\Z))""").match
_BLANKS = re.compile(_SKIP).match


def lex(text: str) -> Iterator[Token]:
    """The tokens of TEXT. After the name of a statement ending in ``_block``, the "{" starts raw
    Python: the text up to its closing "}" becomes one PYCODE token. Counts open blocks, so that an
    end of file inside one names the line of its "{". Raises ConfError (with no file)."""
    scan = _SCAN
    opened: list[int] = []  # lines of the "{" still open: EOF names the innermost
    at_start, python = True, False
    pos, line, seen = 0, 1, 0  # line is the line of text[seen]
    while True:
        m = scan(text, pos)
        if m is None:  # only a quote that never closes matches no terminal
            blank = _BLANKS(text, pos)  # past blanks and comments: the quote
            quote = blank.end() if blank is not None else pos
            raise ConfError("unterminated quoted string", "", line + text.count("\n", seen, quote))
        kind = m.lastgroup or "END"  # every alternative is a named group
        if kind == "END":
            break
        pos = m.start(kind)
        line += text.count("\n", seen, pos)
        seen = pos
        tok = Token(kind, m.group(kind), pos, line)
        pos = m.end()
        if kind == "LBRACE":
            if python:
                code, pos = _python(text, tok)
                yield code
                at_start, python = True, False
                continue
            if len(opened) >= MAX_DEPTH:
                raise ConfError(f"blocks nested deeper than {MAX_DEPTH}", "", line)
            opened.append(line)
            at_start = True
        elif kind == "RBRACE":
            if not opened:
                raise ConfError('unexpected "}"', "", line)
            opened.pop()
            at_start = True
        elif kind == "SEMICOLON":
            at_start, python = True, False
        elif at_start:
            python = arg_value(kind, tok.value).endswith("_block")
            at_start = False
        yield tok
    if opened and at_start:  # mid-statement, the parser says: expecting ";" or "}"
        raise ConfError(f'unexpected end of file, expecting "}}" for the block opened on line {opened[-1]}',
                        "", line + text.count("\n", seen))


def _python(text: str, brace: Token) -> tuple[Token, int]:
    """The Python after BRACE as one PYCODE token, and where the lexer resumes (after its "}")."""
    start = brace.start_pos + 1
    try:
        end = find_python_end(text, start)
    except Unclosed as exc:
        why = f" ({exc.reason})" if exc.reason and "EOF" not in exc.reason else ""
        raise ConfError(f'unexpected end of file, expecting "}}" for the Python block opened on line '
                        f"{brace.line}{why}", "", text.count("\n") + 1) from None
    return Token("PYCODE", text[start:end], brace.start_pos, brace.line), end + 1


# -- the parser: one token of lookahead; the first token that cannot continue is the error --

_ARGS = ("WORD", "STRING")


def _arg(tok: Token) -> str:
    return arg_value(tok.type, tok.value)


class _Unexpected(Exception):
    """TOKEN (None: the end of the text) cannot come here."""

    def __init__(self, tok: Token | None) -> None:
        self.tok = tok


def _items(tokens: Iterator[Token], inner: bool, file: str, path: str) -> list[Stmt]:
    """Statements up to the "}" closing this block (INNER), or to the end of the text."""
    out: list[Stmt] = []
    for name in tokens:
        if name.type not in _ARGS:
            if name.type == "RBRACE" and inner:
                return out
            raise _Unexpected(name)  # ";" or "{" where a name must be ("}" at the top: the lexer says)
        args: list[str] = []
        for tok in tokens:
            kind = tok.type
            if kind in _ARGS:
                args.append(_arg(tok))
                continue
            if kind == "SEMICOLON":
                out.append(Stmt(_arg(name), tuple(args), None, None, file, name.line, path))
            elif kind == "LBRACE":
                body = tuple(_items(tokens, True, file, path))
                out.append(Stmt(_arg(name), tuple(args), body, None, file, name.line, path))
            elif kind == "PYCODE":
                out.append(Stmt(_arg(name), tuple(args), (), tok.value, file, name.line, path, tok.line))
            else:
                raise _Unexpected(tok)
            break
        else:
            raise _Unexpected(None)
    if inner:  # the lexer names an unclosed block at the start of a statement; this is not reached
        raise _Unexpected(None)
    return out


def parse_text(text: str, file: str, path: str = "") -> list[Stmt]:
    """Parse TEXT (no include expansion). Raises ConfError naming FILE, in nginx's words."""
    try:
        return _items(lex(text), False, file, path)
    except ConfError as exc:
        raise ConfError(exc.message, file, exc.line) from None
    except _Unexpected as exc:
        tok = exc.tok
        if tok is None:
            raise ConfError('unexpected end of file, expecting ";" or "}"', file, text.count("\n") + 1) from None
        shown = "}" if tok.type == "PYCODE" else tok.value
        raise ConfError(f'unexpected "{shown}"', file, tok.line) from None


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


def parse_file(path: str, files: list[str], where: tuple[str, int] = ("", 0)) -> list[Stmt]:
    """Parse the file at absolute PATH and every file it includes (relative to its directory)."""
    shown = display_path(path)
    files.append(path)
    text = read_file(path, shown, where)
    stmts = parse_text(text, shown, path)
    if "include" not in text:  # nothing to expand (the common case, and a large file's fast path)
        return stmts
    return expand(stmts, os.path.dirname(path), files, 0)


def expand(stmts: list[Stmt] | tuple[Stmt, ...], base: str, files: list[str], depth: int) -> list[Stmt]:
    """Replace every ``include GLOB;`` by the statements of the files it names, sorted."""
    out: list[Stmt] = []
    for st in stmts:
        if st.name == "include" and st.code is None:
            out.extend(_include(st, base, files, depth))
        elif st.block:
            out.append(replace_block(st, tuple(expand(st.block, base, files, depth))))
        else:
            out.append(st)
    return out


def replace_block(st: Stmt, block: tuple[Stmt, ...]) -> Stmt:
    return Stmt(st.name, st.args, block, st.code, st.file, st.line, st.path, st.code_line)


def _include(st: Stmt, base: str, files: list[str], depth: int) -> list[Stmt]:
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
        stmts = parse_text(read_file(path, shown, where), shown, path)
        out.extend(expand(stmts, base, files, depth + 1))
    return out
