"""Config text → a tree of `Stmt`, includes expanded.

Owns the syntax: lark's LALR parser over grammar.lark (words, strings, comments,
blocks), with a lexer that hands the raw Python of a ``*_by_python_block`` to the
parser as one token (pyblock.py finds its closing brace); unescaping; ``include``;
nginx's wording for syntax errors. Knows nothing of what a directive means (that is
directives.py).
"""
from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# lark imports the third-party `regex` module whenever it is installed, for Lark(regex=True) and
# Unicode categories in terminals, neither of which this grammar uses; that import is about a
# third of lark's cost at start. Hidden while lark loads (a later `import regex` is unaffected),
# so every machine reads configs as one without `regex` does.
_HIDE_REGEX = "regex" not in sys.modules
if _HIDE_REGEX:
    sys.modules["regex"] = None  # type: ignore[assignment]
try:
    from lark import Lark, Token, Transformer
    from lark.exceptions import UnexpectedEOF, UnexpectedInput, UnexpectedToken
    from lark.lexer import Lexer
finally:
    if _HIDE_REGEX:
        del sys.modules["regex"]

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


# -- the lexer: the grammar's terminals, and a Python block as one PYCODE token --

GRAMMAR = Path(__file__).with_name("grammar.lark")
# lark's own cache of the grammar's analysed tables, kept beside Python's bytecode cache:
# a start loads them instead of rebuilding the LALR tables. lark checks the grammar's
# hash on load and rebuilds (and rewrites) a stale or unreadable file by itself.
CACHE = GRAMMAR.parent / "__pycache__" / "grammar.lark.cache"


class _ConfLexer(Lexer):
    """The grammar's terminals as one regex, plus the PYCODE capture.

    The terminals are lark's own (``lexer_conf.terminals``, read from grammar.lark),
    joined into one pattern: the ignored ones (WS, COMMENT) as an atomic prefix,
    then one of the others, whose first characters never overlap. This is lark's
    basic lexer without its per-token bookkeeping, which costs more than the match.
    After the name of a statement ending in ``_block``, the "{" starts raw Python:
    the text up to its closing "}" becomes one PYCODE token. The lexer also counts
    open blocks, so that an end of file inside one names the line of its "{".
    """

    def __init__(self, lexer_conf: Any) -> None:
        terms = {t.name: t.pattern.to_regexp() for t in lexer_conf.terminals}
        skip = "|".join(terms.pop(name) for name in lexer_conf.ignore)
        parts = "|".join(f"(?P<{name}>{rx})" for name, rx in terms.items())
        # atomic: a comment is never cut short to let a later terminal match (backtracking
        # would read '#a "b" c;' followed by an unterminated quote as a statement)
        self.scan = re.compile(f"(?>(?:{skip})*)(?:{parts}|(?P<END>\\Z))").match
        self.skip = re.compile(f"(?>(?:{skip})*)").match

    def lex(self, text: str) -> Iterator[Token]:  # type: ignore[override]
        scan = self.scan
        opened: list[int] = []  # lines of the "{" still open: EOF names the innermost
        at_start, python = True, False
        pos, line, seen = 0, 1, 0  # line is the line of text[seen]
        while True:
            m = scan(text, pos)
            if m is None:  # only a quote that never closes matches no terminal
                blank = self.skip(text, pos)  # past blanks and comments: the quote
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
                python = arg_value(kind, tok).endswith("_block")
                at_start = False
            yield tok
        if opened and at_start:  # mid-statement, the parser says: expecting ";" or "}"
            raise ConfError(f'unexpected end of file, expecting "}}" for the block opened on line {opened[-1]}',
                            "", line + text.count("\n", seen))


def _python(text: str, brace: Token) -> tuple[Token, int]:
    """The Python after BRACE as one PYCODE token, and where the lexer resumes (after its "}")."""
    start = (brace.start_pos or 0) + 1  # our lexer sets every token's position
    try:
        end = find_python_end(text, start)
    except Unclosed as exc:
        why = f" ({exc.reason})" if exc.reason and "EOF" not in exc.reason else ""
        raise ConfError(f'unexpected end of file, expecting "}}" for the Python block opened on line '
                        f"{brace.line}{why}", "", text.count("\n") + 1) from None
    return Token("PYCODE", text[start:end], brace.start_pos, brace.line), end + 1


# -- the parser: the grammar's rules make Stmts as they reduce (no tree is built) --

def _arg(tok: Token) -> str:
    return arg_value(tok.type, str(tok))


def _line(tok: Token) -> int:
    return tok.line or 0  # our lexer sets every token's line


class _Build(Transformer[Token, list[Stmt]]):
    """Rule → Stmt, run inside the LALR parser. FILE and PATH are set before each parse."""

    def __init__(self) -> None:
        super().__init__()
        self.file, self.path = "", ""

    def start(self, items: list[Any]) -> list[Stmt]:
        return items

    def stmt(self, items: list[Token]) -> Stmt:
        name = items[0]
        return Stmt(_arg(name), tuple(_arg(t) for t in items[1:]), None, None, self.file, _line(name),
                    self.path)

    def block(self, items: list[Any]) -> Stmt:
        name = items[0]
        args = tuple(_arg(t) for t in items[1:] if isinstance(t, Token))
        body = tuple(s for s in items[1:] if isinstance(s, Stmt))
        return Stmt(_arg(name), args, body, None, self.file, _line(name), self.path)

    def pyblock(self, items: list[Token]) -> Stmt:
        name, code = items[0], items[-1]
        return Stmt(_arg(name), tuple(_arg(t) for t in items[1:-1]), (), str(code), self.file,
                    _line(name), self.path, _line(code))


_build = _Build()
_parser: list[Lark] = []


def parser() -> Lark:
    """The one LALR parser of this process, loaded from lark's cache (built and cached on a miss)."""
    if not _parser:
        cache: str | bool = str(CACHE)
        try:
            CACHE.parent.mkdir(exist_ok=True)
        except OSError:  # a read-only install: build the tables in memory every start
            cache = False
        _parser.append(Lark(GRAMMAR.read_text(), parser="lalr", lexer=_ConfLexer, transformer=_build,
                            maybe_placeholders=False, cache=cache))
    return _parser[0]


def parse_text(text: str, file: str, path: str = "") -> list[Stmt]:
    """Parse TEXT (no include expansion) with lark's LALR parser over grammar.lark.

    Raises ConfError naming FILE, in nginx's words.
    """
    lark = parser()
    _build.file, _build.path = file, path
    try:
        return lark.parse(text)  # type: ignore[return-value]
    except ConfError as exc:
        raise ConfError(exc.message, file, exc.line) from None
    except UnexpectedEOF:
        raise ConfError('unexpected end of file, expecting ";" or "}"', file, text.count("\n") + 1) from None
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            raise ConfError('unexpected end of file, expecting ";" or "}"', file, text.count("\n") + 1) from None
        shown = "}" if tok.type == "PYCODE" else str(tok)
        raise ConfError(f'unexpected "{shown}"', file, tok.line) from None
    except UnexpectedInput as exc:
        raise ConfError("syntax error", file, getattr(exc, "line", 0) or 0) from None


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
