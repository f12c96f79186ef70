"""lark's LALR parser over grammar.lark: the reference the fast reader is held to.

``parse.parse_text`` reads the grammar's terminals and runs its three rules as a
stack in one pass; this module runs the same grammar through lark, with a lexer
that captures Python blocks the same way. The tests hold the two readers equal
on the config corpus and on fuzzed input. The daemon itself never imports it
(lark is a test dependency), which keeps it off every start.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import BasicLexer, Lexer, LexerState, LineCounter
from lark.utils import TextSlice

from pyngx.conf.parse import GRAMMAR, MAX_DEPTH, ConfError, Stmt, _Unclosed, arg_value, find_python_end


def _arg(tok: Token) -> str:
    return arg_value(tok.type, str(tok))


class _ConfLexer(Lexer):
    """lark's basic lexer for the grammar's terminals, plus the PYCODE capture."""

    def __init__(self, lexer_conf: Any) -> None:
        self.basic = BasicLexer(lexer_conf)

    def lex(self, text: str) -> Iterator[Token]:  # type: ignore[override]
        state = LexerState(TextSlice(text, 0, len(text)), LineCounter("\n"))
        opened: list[int] = []  # lines of the "{" still open: EOF names the innermost
        at_start, python = True, False
        while True:
            try:
                tok = self.basic.next_token(state)
            except EOFError:
                break
            except UnexpectedCharacters as exc:
                raise ConfError("unterminated quoted string", "", exc.line) from None
            kind = tok.type
            if kind == "LBRACE":
                if python:
                    yield self._python(text, tok, state)
                    at_start, python = True, False
                    continue
                if len(opened) >= MAX_DEPTH:
                    raise ConfError(f"blocks nested deeper than {MAX_DEPTH}", "", tok.line)
                opened.append(tok.line)
                at_start = True
            elif kind == "RBRACE":
                if not opened:
                    raise ConfError('unexpected "}"', "", tok.line)
                opened.pop()
                at_start = True
            elif kind == "SEMICOLON":
                at_start, python = True, False
            elif at_start:
                python = _arg(tok).endswith("_block")
                at_start = False
            yield tok
        if opened and at_start:  # mid-statement, the parser says: expecting ";" or "}"
            raise ConfError(f'unexpected end of file, expecting "}}" for the block opened on line {opened[-1]}',
                            "", state.line_ctr.line)

    def _python(self, text: str, brace: Token, state: LexerState) -> Token:
        start = brace.end_pos
        try:
            end = find_python_end(text, start)
        except _Unclosed as exc:
            why = f" ({exc.reason})" if exc.reason and "EOF" not in exc.reason else ""
            raise ConfError(f'unexpected end of file, expecting "}}" for the Python block opened on line '
                            f"{brace.line}{why}", "", text.count("\n") + 1) from None
        tok = Token("PYCODE", text[start:end], brace.start_pos, brace.line, brace.column)
        state.line_ctr.feed(text[start:end + 1])
        return tok


class _Build(Transformer[Token, list[Stmt]]):
    """Parse tree → Stmt records (run inside the LALR parser: no tree is built)."""

    def __init__(self, file: str, path: str) -> None:
        super().__init__()
        self.file, self.path = file, path

    def start(self, items: list[Any]) -> list[Stmt]:
        return items

    def stmt(self, items: list[Token]) -> Stmt:
        name = items[0]
        return Stmt(_arg(name), tuple(_arg(t) for t in items[1:]), None, None, self.file, name.line,
                    self.path)

    def block(self, items: list[Any]) -> Stmt:
        name = items[0]
        args = tuple(_arg(t) for t in items[1:] if isinstance(t, Token))
        body = tuple(s for s in items[1:] if isinstance(s, Stmt))
        return Stmt(_arg(name), args, body, None, self.file, name.line, self.path)

    def pyblock(self, items: list[Token]) -> Stmt:
        name, code = items[0], items[-1]
        return Stmt(_arg(name), tuple(_arg(t) for t in items[1:-1]), (), str(code), self.file,
                    name.line, self.path, code.line)


_GRAMMAR = GRAMMAR.read_text()
_build = _Build("", "")
_parser: list[Lark] = []


def _lark() -> Lark:
    """The one LALR parser, built on first use; its transformer makes Stmts as it parses."""
    if not _parser:
        _parser.append(Lark(_GRAMMAR, parser="lalr", lexer=_ConfLexer, transformer=_build,
                            maybe_placeholders=False))
    return _parser[0]


def parse_text_lark(text: str, file: str, path: str = "") -> list[Stmt]:
    """Parse TEXT with lark's LALR parser over the grammar's rules (the reference for parse_text).

    Raises ConfError naming FILE.
    """
    parser = _lark()
    _build.file, _build.path = file, path
    try:
        return parser.parse(text)  # type: ignore[return-value]
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


def lark_terminals() -> tuple[dict[str, str], list[str]]:
    """The terminals as lark derives them from grammar.lark (what parse.terminals must equal)."""
    parser = _lark()
    return {t.name: t.pattern.to_regexp() for t in parser.terminals}, list(parser.ignore_tokens)
