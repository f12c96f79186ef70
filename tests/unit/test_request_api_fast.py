"""The request API's quick paths give what the general ones give: get_uri_args from its cache
(a new dict each call), get_headers in one pass (names twice, bytes that are not UTF-8, names
never seen), ngx.header set inline (odd values go the general way), ngx.shared by attribute."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_http_server import Served, loc

from pyngx.http import variables
from pyngx.shm import shdict

ARGS = """
first = ngx.req.get_uri_args()
first["mine"] = "changed"
second = ngx.req.get_uri_args()
ngx.print(json.dumps([first, second, ngx.req.get_uri_args(1)]))
"""

HEADERS = """
h = ngx.req.get_headers()
h["x-added"] = "1"
again = ngx.req.get_headers()
ngx.print(json.dumps([sorted(again.items()), "x-added" in again]))
"""

SET = """
ngx.header.content_type = "application/json"
ngx.header["X-One"] = "a"
ngx.header["X-Crlf"] = "b\\r\\nInjected: 1"
ngx.header["X-Lf"] = "c\\nInjected: 2"
ngx.header["X-Cr"] = "d\\rInjected: 3"
ngx.header["X-Wide"] = "\u20ac\\nInjected: 4"
ngx.header["X-Num"] = 7
ngx.header["X-List"] = ["p", "q"]
ngx.header["X-Gone"] = "soon"
ngx.header["X-Gone"] = None
ngx.header.x_under = "u"
ngx.print(json.dumps([ngx.header["x-one"], ngx.header.x_num, ngx.header["x-gone"]]))
"""

SHARED = """
hits = ngx.shared.counters.incr("k", 1, 0)
try:
    ngx.shared.missing
except AttributeError as e:
    err = str(e)
ngx.print(json.dumps([hits, ngx.shared["counters"].get("k"), err, "counters" in ngx.shared]))
"""


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    s = Served((loc("=", "/args", ARGS), loc("=", "/headers", HEADERS), loc("=", "/set", SET),
                loc("=", "/shared", SHARED), loc("=", "/echo", 'ngx.print(ngx.req.get_headers()["x-bytes"])'),
                loc("=", "/say", 'ngx.say(ngx.req.get_headers()["x-bytes"])')),
               "asyncio")
    s.rt.globals["json"] = json
    s.rt.shdicts = {"counters": shdict.create("counters", 1 << 20)}
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("query, expected", [
    ("id=42&view=full", {"id": "42", "view": "full"}),
    ("a=1&a=2&b", {"a": ["1", "2"], "b": True}),
    ("a%20b=c+d&e=", {"a b": "c d", "e": ""}),
    ("", {}),
])
def test_uri_args_twice_give_fresh_dicts(served: Served, query: str, expected: dict[str, object]) -> None:
    for _ in range(2):  # the second request reads the cache
        status, _, body = served.get("/args?" + query)
        first, second, one = json.loads(body)
        assert status == 200
        assert second == expected
        assert first == {**expected, "mine": "changed"}
        assert one == dict(list(expected.items())[:1])


def test_uri_args_cache_is_bounded_and_copies() -> None:
    variables._ARGS.clear()
    for i in range(variables.ARGS_CACHED + 5):
        variables.uri_args(f"n={i}")
    assert len(variables._ARGS) <= variables.ARGS_CACHED
    got = variables.uri_args("a=1&a=2")
    got["a"].append("3")
    assert variables.uri_args("a=1&a=2") == {"a": ["1", "2"]}  # a list is never shared between calls
    assert "a=1&a=2" not in variables._ARGS


def test_headers_in_one_pass_and_the_general_way(served: Served) -> None:
    head = (b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Seen-Never-Before-1: v\r\nX-Twice: 1\r\nx-twice: 2\r\n"
            b"X-Bytes: \xff\xfe\r\nConnection: close\r\n\r\n")
    for _ in range(2):
        out = served.raw(head)
        items, added = json.loads(out.split(b"\r\n\r\n", 1)[1])
        got = dict(items)
        assert got["x-seen-never-before-1"] == "v"
        assert got["x-twice"] == ["1", "2"]
        assert got["x-bytes"] == "\udcff\udcfe"
        assert added is False  # each call gives a new dict
    out = served.raw(b"GET /headers HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nConnection: close\r\n\r\n")
    assert dict(json.loads(out.split(b"\r\n\r\n", 1)[1])[0]) == {"host": "x", "x-a": "1", "connection": "close"}


def test_header_set_inline_and_the_general_way(served: Served) -> None:
    for _ in range(2):  # names seen before take the inline path
        out = served.raw(b"GET /set HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, body = out.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert b"Content-Type: application/json" in lines  # nginx's own name, as set through content_type
        assert b"X-One: a" in lines
        assert b"X-Crlf: b%0D%0AInjected: 1" in lines
        assert b"X-Lf: c%0AInjected: 2" in lines and b"X-Cr: d%0DInjected: 3" in lines  # (each alone, too)
        assert "X-Wide: \u20ac%0AInjected: 4".encode() in lines
        assert b"X-Num: 7" in lines
        assert b"X-List: p" in lines and b"X-List: q" in lines
        assert b"x-under: u" in lines
        assert not any(line.startswith(b"X-Gone") for line in lines)
        assert json.loads(body) == ["a", "7", None]


def test_shared_by_attribute(served: Served) -> None:
    hits, value, err, listed = json.loads(served.get("/shared")[2])
    assert hits == value >= 1
    assert err == 'no shared dict "missing"'
    assert listed is True


def test_rendered_header_lines_are_kept_but_never_managed_ones() -> None:
    from pyngx.http import exchange

    hdrs = {"x-a": ("X-A", "1"), "content-length": ("Content-Length", "5"), "x-l": ("X-L", ["p", "q"]),
            "server": ("Server", "other")}
    for _ in range(2):  # the second time from the kept lines where there are some
        assert exchange._render_headers(hdrs) == b"X-A: 1\r\nX-L: p\r\nX-L: q\r\n"
    assert ("Content-Length", "5") not in exchange._LINES and ("Server", "other") not in exchange._LINES
    assert exchange._render_headers({"x-a": ("X-A", "1")}) == b"X-A: 1\r\n"
    for i in range(exchange.NAMES_CACHED + 5):
        exchange._render_headers({"x-n": ("X-N", str(i))})
    assert len(exchange._LINES) <= exchange.NAMES_CACHED


@pytest.mark.parametrize("path, end", [("/echo", b""), ("/say", b"\n")])
def test_print_and_say_write_back_bytes_that_were_not_utf8(served: Served, path: str, end: bytes) -> None:
    for value in (b"\xff\xfe\xc3\xa9", b"plain \xc3\xa9"):
        out = served.raw(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Bytes: " + value
                         + b"\r\nConnection: close\r\n\r\n")
        assert out.endswith(b"\r\n\r\n" + value + end)
