"""The config grammar's parser: lark's LALR parser over grammar.lark, and its lexer.

Owns everything of lark: the lexer that hands the raw Python of a
``*_by_python_block`` to the parser as one token (pyblock.py finds its closing
brace), the rules that make `Stmt` as they reduce, lark's table cache, and
nginx's wording for syntax errors. Imported only when a config text is parsed
for real (`pyngx.conf.parse.parse_text`): a start whose files are all in the
statement cache (`pyngx.conf.stmtcache`) never loads lark.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
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

from pyngx.conf.parse import MAX_DEPTH, ConfError, Stmt, arg_value
from pyngx.conf.pyblock import Unclosed, find_python_end


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


def parse(text: str, file: str, path: str = "") -> list[Stmt]:
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
