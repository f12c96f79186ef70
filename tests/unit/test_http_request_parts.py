"""The request API's parsing and rendering pieces: query arguments, request headers, response
header names and lines (OpenResty's semantics; the fast paths agree with the plain formulas)."""
from __future__ import annotations

import random
from typing import Any
from urllib.parse import unquote_plus

import pytest

from pyngx.http import exchange, variables
from pyngx.http.exchange import Exchange


def reference_args(query: str) -> dict[str, Any]:
    """get_uri_args as a formula: split on &, each side unquote_plus'd, repeats grouped."""
    out: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = unquote_plus(key, errors="surrogateescape")
        item = unquote_plus(value, errors="surrogateescape") if sep else True
        old = out.get(key)
        out[key] = item if old is None else old + [item] if isinstance(old, list) else [old, item]
    return out


@pytest.mark.parametrize(("query", "expected"), [
    ("", {}),
    ("id=42&view=full", {"id": "42", "view": "full"}),
    ("a=1&a=2&a", {"a": ["1", "2", True]}),
    ("a+b=c+d", {"a b": "c d"}),
    ("x=%41%ff", {"x": "A\udcff"}),
    ("&&a=&=v&", {"a": "", "": "v"}),
    ("k=v=w", {"k": "v=w"}),
])
def test_uri_args(query: str, expected: dict[str, Any]) -> None:
    assert variables.uri_args(query) == expected


def test_uri_args_agree_with_the_formula_on_random_queries() -> None:
    rng = random.Random(7)
    alphabet = "ab=&+%2F41ff.~ é"
    for _ in range(3000):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        assert variables.uri_args(query) == reference_args(query), query


def make(headers: list[tuple[bytes, bytes]]) -> Exchange:
    return Exchange(None, b"GET", b"/", ("/", "", None, None), "1.1", headers, True, 0.0)  # type: ignore[arg-type]


def test_request_headers_fold_case_and_group_repeats() -> None:
    ex = make([(b"Host", b"x"), (b"X-Many", b"1"), (b"x-many", b"2"), (b"X-MANY", b"3"), (b"X-Bin", b"\xff")])
    got = ex.request_headers()
    assert got == {"host": "x", "x-many": ["1", "2", "3"], "x-bin": "\udcff"}
    assert ex.request_headers() is got  # built once a request


def test_header_name_cache_stays_bounded() -> None:
    for i in range(exchange.NAMES_CACHED * 2):
        assert exchange.header_name(f"X_Name_{i}") == (f"X-Name-{i}", f"x-name-{i}")
    assert len(exchange._NAMES) <= exchange.NAMES_CACHED
    for i in range(exchange.NAMES_CACHED * 2):
        exchange._lower_name(b"X-Req-%d" % i)
    assert len(exchange._LOWER) <= exchange.NAMES_CACHED


@pytest.mark.parametrize(("name", "expected"), [
    ("content_type", ("Content-Type", "content-type")),  # nginx writes Content-Type under its own name
    ("CONTENT-TYPE", ("Content-Type", "content-type")),
    ("x_foo", ("x-foo", "x-foo")),  # the others as user code wrote them (OpenResty)
    ("X-Tenant", ("X-Tenant", "x-tenant")),
    ("a\r\nb: c", ("a%0D%0Ab%3A%20c", "a%0d%0ab%3a%20c")),
])
def test_header_name(name: str, expected: tuple[str, str]) -> None:
    assert exchange.header_name(name) == expected
    assert exchange.header_name(name) == expected  # the second time from the cache


def test_render_headers() -> None:
    hdrs = {"x-one": ("X-One", "a"), "x-two": ("x-two", ["b", "c"]), "content-length": ("Content-Length", "9"),
            "x-num": ("X-Num", 5), "x-u": ("X-U", "é\udcff")}
    assert exchange._render_headers(hdrs) == (
        b"X-One: a\r\nx-two: b\r\nx-two: c\r\nX-Num: 5\r\nX-U: \xc3\xa9\xff\r\n")
