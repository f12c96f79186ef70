"""Location matching in nginx's order, against nginx's documented example."""
from __future__ import annotations

import re

import pytest

from pyngx.conf.model import LocationConf
from pyngx.http.location import Locations
from pyngx.http.uri import BadTarget, split


def loc(modifier: str, pattern: str) -> LocationConf:
    flags = re.IGNORECASE if modifier == "~*" else 0
    rx = re.compile(pattern, flags) if modifier in ("~", "~*") else None
    return LocationConf(modifier, pattern, rx)  # type: ignore[arg-type]


# https://nginx.org/en/docs/http/ngx_http_core_module.html#location
EXAMPLE = [("=", "/"), ("", "/"), ("", "/documents/"), ("^~", "/images/"), ("~*", r"\.(gif|jpg|jpeg)$")]
NAMES = "ABCDE"


@pytest.mark.parametrize(("uri", "expected"), [
    ("/", "A"),
    ("/index.html", "B"),
    ("/documents/document.html", "C"),
    ("/images/1.gif", "D"),
    ("/documents/1.jpg", "E"),
    ("/DOCUMENTS/1.JPG", "E"),
    ("/documents", "B"),
])
def test_nginx_documented_example(uri: str, expected: str) -> None:
    locs = Locations([(loc(m, p), NAMES[i]) for i, (m, p) in enumerate(EXAMPLE)])
    assert locs.find(uri)[0] == expected
    assert locs.find(uri)[0] == expected  # the cached answer is the same


def test_regexes_in_config_order_and_captures() -> None:
    locs = Locations([(loc("~", r"^/a/(\d+)"), "first"), (loc("~", r"^/a/(\w+)"), "second"), (loc("", "/a/"), "p")])
    route, m = locs.find("/a/12")
    assert route == "first" and m is not None and m.group(1) == "12"
    route, m = locs.find("/a/xy")
    assert route == "second" and m is not None and m.group(1) == "xy"


def test_longest_prefix_decides_whether_caret_tilde_stops() -> None:
    # the longest prefix is plain, so regexes are still tried although a shorter ^~ matches
    locs = Locations([(loc("^~", "/s/"), "stop"), (loc("", "/s/long/"), "long"), (loc("~", r"\.txt$"), "rx")])
    assert locs.find("/s/long/a.txt")[0] == "rx"
    assert locs.find("/s/a.txt")[0] == "stop"
    assert locs.find("/s/long/a")[0] == "long"


def test_no_match_is_none_and_exact_needs_equality() -> None:
    locs = Locations([(loc("=", "/x"), "x"), (loc("", "/api/"), "api")])
    assert locs.find("/") == (None, None)
    assert locs.find("/x/") == (None, None)
    assert locs.find("/x")[0] == "x"


@pytest.mark.parametrize(("url", "expected"), [
    (b"/", ("/", "")),
    (b"/a/b?x=1&y", ("/a/b", "x=1&y")),
    (b"/a//b/./c/../d", ("/a/b/d", "")),
    (b"/a/%2e%2e/b", ("/b", "")),
    (b"/caf%C3%A9/", ("/caf\u00e9/", "")),
    (b"http://example.com/p?q=1", ("/p", "q=1")),
])
def test_uri_normalised(url: bytes, expected: tuple[str, str]) -> None:
    assert split(url) == expected


@pytest.mark.parametrize("url", [b"/..", b"/a/../../etc/passwd", b"/%00", b"*", b"ftp://x/y"])
def test_bad_targets_refused(url: bytes) -> None:
    with pytest.raises(BadTarget):
        split(url)
