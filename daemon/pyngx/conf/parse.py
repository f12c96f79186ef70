"""Config text → a tree of `Stmt`, includes expanded.

Owns the syntax: the grammar (grammar.lark, in lark's notation) for words, strings,
comments and blocks, read in one pass from the grammar's own terminals; the capture
of raw Python in ``*_by_python_block`` bodies; unescaping; ``include``. Knows
nothing of what a directive means (that is directives.py). larkref.py runs the same
grammar through lark's LALR parser, the reference the tests hold this reader to.
"""
from __future__ import annotations

import glob
import os
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

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


# -- finding the "}" that closes a Python block --

_PY_SCAN = re.compile(r"""(?P<q>[rRbBuUfF]{0,2}(?:\"\"\"|'''|"|'))|(?P<c>\#[^\n]*)|(?P<b>[{}])""")
_STRING_END = {
    '"': re.compile(r'(?:[^"\\\n]|\\.)*"', re.S),
    "'": re.compile(r"(?:[^'\\\n]|\\.)*'", re.S),
    '"""': re.compile(r'(?:[^\\]|\\.)*?"""', re.S),
    "'''": re.compile(r"(?:[^\\]|\\.)*?'''", re.S),
}
# Before 3.12, an f-string is one STRING token like any other; from 3.12 on it may
# nest quotes of its own kind, which only the real tokenizer follows.
_FSTRING_NESTS = sys.version_info >= (3, 12)


class _Unclosed(Exception):
    """The Python ran to the end of the file without its closing brace (or did not tokenize)."""

    def __init__(self, reason: str = "", line: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def find_python_end(text: str, start: int) -> int:
    """Index of the "}" that closes the Python starting at START.

    Braces in strings (every prefix and quote kind) and comments do not count;
    braces of dicts, sets and f-string fields do. Raises _Unclosed.
    """
    pos, depth = start, 0
    while True:
        m = _PY_SCAN.search(text, pos)
        if m is None:
            raise _Unclosed()
        kind = m.lastgroup
        if kind == "b":
            if m.group() == "{":
                depth += 1
            elif depth == 0:
                return m.start()
            else:
                depth -= 1
            pos = m.end()
        elif kind == "c":
            pos = m.end()
        else:
            opener = m.group("q")
            quote = opener.lstrip("rRbBuUfF")
            if _FSTRING_NESTS and "f" in opener[: -len(quote)].lower():
                return _tokenize_end(text, start)
            end = _STRING_END[quote].match(text, m.end())
            if end is None:
                return _tokenize_end(text, start)  # let Python's tokenizer say what is wrong
            pos = end.end()


def _tokenize_end(text: str, start: int) -> int:
    """The slow, exact way: Python's tokenizer over the text after START."""
    pos = start
    # An opening "(" makes the tokenizer ignore indentation: a "}" line indented
    # less than the code must not be an IndentationError.
    lead = "("
    line_starts = [start - 1]

    def readline() -> str:
        nonlocal pos, lead
        if pos >= len(text):
            return ""
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl + 1
        line = lead + text[pos:end]
        line_starts.append(pos - len(lead))
        lead, pos = "", end
        return line

    depth = 0
    try:
        for tok in tokenize.generate_tokens(readline):
            if tok.type != tokenize.OP or tok.string not in "{}":
                continue
            if tok.string == "{":
                depth += 1
            elif depth == 0:
                return line_starts[tok.start[0]] + tok.start[1]
            else:
                depth -= 1
    except (tokenize.TokenError, SyntaxError) as exc:
        line = getattr(exc, "lineno", None) or (exc.args[1][0] if len(exc.args) > 1 else 0)
        raise _Unclosed(str(exc.args[0]), line) from None
    raise _Unclosed()


# -- the fast reader: the grammar's terminals, and its three rules as a stack --

GRAMMAR = Path(__file__).with_name("grammar.lark")
# the rules' literal tokens, under the names lark gives them
_PUNCTUATION = {";": "SEMICOLON", "{": "LBRACE", "}": "RBRACE"}
_CONTROL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f"}
_TERMINAL_DEF = re.compile(r"^([A-Z][A-Z_]*):(.*(?:\n[ \t]+\|.*)*)", re.M)
_ALTERNATIVE = re.compile(r"""\s*\|?\s*(?:/((?:[^/\\\n]|\\.)*)/([imslux]*)|"((?:[^"\\]|\\.)*)")""")


def terminals() -> tuple[dict[str, str], list[str]]:
    """The grammar's terminals as regexes, spelled as lark spells them, and the ignored ones.

    Read from grammar.lark directly, so the daemon never imports lark; a test holds
    the result equal to what lark itself derives from the same file.
    """
    text = re.sub(r"^\s*//.*", "", GRAMMAR.read_text(), flags=re.M)
    terms: dict[str, str] = {}
    for name, body in _TERMINAL_DEF.findall(text):
        alts = []
        for rx, flags, literal in _ALTERNATIVE.findall(body):
            # lark reads \n \t \r \f in a regex as the characters themselves
            alt = re.escape(literal) if literal else re.sub(
                r"\\(.)", lambda m: _CONTROL.get(m.group(1), m.group(0)), rx.replace("\\/", "/"))
            alts.append(f"(?{flags}:{alt})" if flags else alt)
        terms[name] = alts[0] if len(alts) == 1 else f"(?:{'|'.join(alts)})"
    for literal in re.findall(r'"([^"]*)"', _TERMINAL_DEF.sub("", text)):  # in the rules
        terms.setdefault(_PUNCTUATION[literal], re.escape(literal))
    ignored = re.findall(r"^%ignore\s+(\w+)", text, re.M)
    return terms, ignored


def _scanner() -> re.Pattern[str]:
    """One regex of the grammar's terminals: the ignored ones (WS, COMMENT) as a prefix of each match,
    then one of the others, or the end of the text (their first characters never overlap)."""
    if not _scan:
        terms, ignored = terminals()
        skip = "|".join(terms.pop(name) for name in ignored)
        parts = "|".join(f"(?P<{name}>{rx})" for name, rx in terms.items())
        # atomic: a comment is never cut short to let a later terminal match (backtracking
        # would read '#a "b" c;' followed by an unterminated quote as a statement)
        _scan.append(re.compile(f"(?>(?:{skip})*)(?:{parts}|(?P<END>\\Z))"))
        _scan.append(re.compile(f"(?>(?:{skip})*)"))
    return _scan[0]


_scan: list[re.Pattern[str]] = []


def _skipper() -> re.Pattern[str]:
    """The ignored terminals (WS, COMMENT), read atomically (error reporting only)."""
    _scanner()
    return _scan[1]


def parse_text(text: str, file: str, path: str = "") -> list[Stmt]:
    """Parse TEXT (no include expansion): the grammar's rules, read in one pass.

    The same result as lark's LALR parser over grammar.lark (larkref.parse_text_lark; the
    tests hold them to it), several times faster.
    Raises ConfError naming FILE.
    """
    match = _scanner().match
    items: list[Stmt] = []
    stack: list[tuple[list[Stmt], list[str], int, int]] = []  # enclosing items, words, their line, "{" line
    words: list[str] = []
    pos, end, line, seen = 0, len(text), 1, 0  # line is the line of text[seen]
    first_line = 0
    while True:
        m = match(text, pos)
        if m is None:  # only a quote that never closes matches no terminal
            quote = _skipper().match(text, pos).end()  # past blanks and comments: the quote
            raise ConfError("unterminated quoted string", file, line + text.count("\n", seen, quote))
        kind = m.lastgroup
        if kind == "END":
            break
        value = m.group(kind)
        pos = m.start(kind)
        line += text.count("\n", seen, pos)
        seen = pos
        if kind == "WORD" or kind == "STRING":
            if not words:
                first_line = line
            words.append(unescape(value[1:-1] if kind == "STRING" else value))
        elif kind == "SEMICOLON":
            if not words:
                raise ConfError('unexpected ";"', file, line)
            items.append(Stmt(words[0], tuple(words[1:]), None, None, file, first_line, path))
            words = []
        elif kind == "LBRACE":
            if not words:
                raise ConfError('unexpected "{"', file, line)
            if words[0].endswith("_block"):
                close = _python_close(text, m.end(), line, file)
                items.append(Stmt(words[0], tuple(words[1:]), (), text[m.end():close], file, first_line, path, line))
                words = []
                pos = close + 1
                continue
            if len(stack) >= MAX_DEPTH:
                raise ConfError(f"blocks nested deeper than {MAX_DEPTH}", file, line)
            stack.append((items, words, first_line, line))
            items, words = [], []
        else:  # RBRACE
            if words or not stack:
                raise ConfError('unexpected "}"', file, line)
            outer, bwords, bline, _ = stack.pop()
            outer.append(Stmt(bwords[0], tuple(bwords[1:]), tuple(items), None, file, bline, path))
            items = outer
        pos = m.end()
    last = line + text.count("\n", seen, end)
    if words:
        raise ConfError('unexpected end of file, expecting ";" or "}"', file, last)
    if stack:
        raise ConfError(f'unexpected end of file, expecting "}}" for the block opened on line {_opened(stack)}',
                        file, last)
    return items


def _opened(stack: list[tuple[list[Stmt], list[str], int, int]]) -> int:
    """The line of the innermost "{" still open."""
    return stack[-1][3]


def _python_close(text: str, start: int, line: int, file: str) -> int:
    try:
        return find_python_end(text, start)
    except _Unclosed as exc:
        why = f" ({exc.reason})" if exc.reason and "EOF" not in exc.reason else ""
        raise ConfError(f'unexpected end of file, expecting "}}" for the Python block opened on line {line}{why}',
                        file, text.count("\n") + 1) from None


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
