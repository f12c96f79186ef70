"""The end of the raw Python in a ``*_by_python_block``: the "}" that closes it.

Owns Python's rules for strings, comments and nested braces as far as finding that
brace needs them (a quick scan, and Python's own tokenizer where the scan cannot be
sure). Knows nothing of the config grammar: the lexer in parse.py calls it at the "{".
"""
from __future__ import annotations

import re
import sys
import tokenize

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


class Unclosed(Exception):
    """The Python ran to the end of the file without its closing brace (or did not tokenize)."""

    def __init__(self, reason: str = "", line: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def find_python_end(text: str, start: int) -> int:
    """Index of the "}" that closes the Python starting at START.

    Braces in strings (every prefix and quote kind) and comments do not count;
    braces of dicts, sets and f-string fields do. Raises Unclosed.
    """
    pos, depth = start, 0
    while True:
        m = _PY_SCAN.search(text, pos)
        if m is None:
            raise Unclosed()
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
        raise Unclosed(str(exc.args[0]), line) from None
    raise Unclosed()
