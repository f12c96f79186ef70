"""Mutated configs never make pyngx.conf.load raise anything but ConfError (no traceback for a user)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyngx import conf
from pyngx.conf import parse
from pyngx.conf.directives import TABLE

CORPUS = Path(__file__).resolve().parent.parent / "conf"
# PYNGX_FUZZ_EXAMPLES=5000 for a deeper search than the default run.
EXAMPLES = int(os.environ.get("PYNGX_FUZZ_EXAMPLES", "120"))
SEEDS = [p.read_text() for p in sorted(CORPUS.glob("*/*.conf"))]
# Pieces that stress the syntax: braces, quotes of every kind, escapes, comments, Python prefixes.
PIECES = ["{", "}", ";", '"', "'", '"""', "'''", "\\", "#", "\n", " ", "\t", "\0", "\x0b", "f'{", "rb'", "}'",
          "_block", "content_by_python_block {", "location ~ (", "include *;", "listen [::1", "$", "=", "~*",
          "http {", "server {", "python_shared_dict a 1m;", "await ", "async ", "lambda: {", "\u00e9", "\r\n"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece = draw(st.sampled_from(PIECES)) if op in ("insert", "replace") else ""
        if op == "insert":
            text = text[:pos] + piece + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif op == "replace":
            text = text[:pos] + piece + text[pos + len(piece):]
        else:
            end = min(len(text), pos + draw(st.integers(1, 80)))
            text = text[:end] + text[pos:end] + text[end:]
    return text


@pytest.fixture(scope="module")
def prefix() -> object:
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "conf"))
        yield tmp


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated())
def test_load_raises_only_conf_error(prefix: str, text: str) -> None:
    path = os.path.join(prefix, "conf", "pyngx.conf")
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    try:
        conf.load("conf/pyngx.conf", prefix, ["daemon off;"])
    except conf.ConfError as exc:
        assert str(exc) and "Traceback" not in str(exc)


def _check_parse(text: str) -> None:
    """parse_text gives Stmts whose lines lie in the text, or a ConfError naming such a line."""
    last = text.count("\n") + 1
    try:
        stmts = parse.parse_text(text, "f.conf", "/f.conf")
    except conf.ConfError as exc:
        assert exc.file == "f.conf" and 1 <= exc.line <= last, str(exc)
        assert str(exc) == f"{exc.message} in f.conf:{exc.line}"
        return
    todo = list(stmts)
    while todo:
        st = todo.pop()
        assert 1 <= st.line <= last and type(st.name) is str
        assert st.block is not None or st.code is None
        todo.extend(st.block or ())


@settings(max_examples=EXAMPLES, deadline=None)
@given(text=mutated())
def test_parser_on_mutations(text: str) -> None:
    _check_parse(text)


@settings(max_examples=EXAMPLES, deadline=None)
@given(parts=st.lists(st.sampled_from(list("{}; \"'#\\\nab_$~=*()") + ["_block", "content_by_python_block"]),
                      max_size=60))
def test_random_text_raises_only_conf_error(parts: list[str]) -> None:
    _check_parse("".join(parts))


NAMES = sorted(TABLE) + ["bogus", "x_block"]
ARGS = ["0", "1", "-1", "1k", "8k", "64M", "5g", "99999999999999999999", "1.5", "30s", "1h30m", "500ms", "auto",
        "on", "off", "maybe", "[::1]:80", "[::1", "127.0.0.1:0", "*:8080", "8080", "reuseport", "persist=",
        "persist=logs/x.db", "$", "$v", "$1", "~", "~*", "=", "^~", "(", "^/a$", "http://x", "301", "1000", "",
        "\u0663", "a\\\\b", "combined", "stderr", "debug", "nobody", "*.conf", "conf/../x", "/", "%s"]


@st.composite
def generated(draw: st.DrawFn, depth: int = 0) -> str:
    """A config from the table's names and awkward values: reaches every handler with odd input."""
    out = []
    for _ in range(draw(st.integers(0, 5 if depth < 3 else 2))):
        name = draw(st.sampled_from(NAMES))
        args = " ".join('"' + a.replace('"', '\\"') + '"' for a in draw(st.lists(st.sampled_from(ARGS), max_size=3)))
        kind = TABLE[name].kind if name in TABLE else "simple"
        if kind == "python" or (name == "x_block" and draw(st.booleans())):
            out.append(f"{name} {args} {{\n x = {{'a': 1}}\n}}")
        elif kind == "block" and depth < 4:
            out.append(f"{name} {args} {{\n{draw(generated(depth + 1))}\n}}")
        else:
            out.append(f"{name} {args};")
    return "\n".join(out)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=generated())
def test_generated_configs_raise_only_conf_error(prefix: str, text: str) -> None:
    with open(os.path.join(prefix, "conf", "pyngx.conf"), "w", encoding="utf-8") as f:
        f.write(text)
    try:
        conf.load("conf/pyngx.conf", prefix)
    except conf.ConfError:
        pass
