"""Byte ranges as nginx's range filter reads them (ngx_http_range_parse), and a URI's file path."""
from __future__ import annotations

import pytest

from pyngx.conf.model import StaticConf
from pyngx.http.sendfile import ranges
from pyngx.http.static import Files

SIZE = 100
UNLIMITED = -1

CASES = [
    (b"bytes=0-9", UNLIMITED, [(0, 10)]),
    (b"bytes=90-", UNLIMITED, [(90, 100)]),
    (b"bytes=90-500", UNLIMITED, [(90, 100)]),          # an end past the file is cut
    (b"bytes=-10", UNLIMITED, [(90, 100)]),             # a suffix
    (b"bytes=-500", UNLIMITED, [(0, 100)]),
    (b"bytes= 0 - 1 , 5-6", UNLIMITED, [(0, 2), (5, 7)]),  # spaces, as nginx allows
    (b"bytes=0-1,5-6", 1, 200),                         # over max_ranges: the whole file
    (b"bytes=0-1", 1, [(0, 2)]),
    (b"bytes=0-60,50-99", UNLIMITED, 200),              # more bytes than the file: the whole file
    (b"bytes=100-", UNLIMITED, 416),                    # starts past the end
    (b"bytes=5-2", UNLIMITED, 416),                     # backwards
    (b"bytes=-0", UNLIMITED, 416),
    (b"bytes=abc", UNLIMITED, 416),                     # malformed
    (b"bytes=1-2-3", UNLIMITED, 416),
    (b"bytes=", UNLIMITED, 416),
    (b"bytes=0-1,", UNLIMITED, 416),
    (b"bytes=\xd9\xa1-2", UNLIMITED, 416),              # not ASCII digits
    (b"bytes=200-300,0-1", UNLIMITED, [(0, 2)]),        # the unsatisfiable one is skipped
]


@pytest.mark.parametrize("spec,limit,expected", CASES, ids=[c[0].decode("latin-1") for c in CASES])
def test_range_specs(spec: bytes, limit: int, expected: object) -> None:
    assert ranges(spec, SIZE, limit) == expected


def test_empty_file_range_is_the_whole_file() -> None:
    assert ranges(b"bytes=0-", 0, UNLIMITED) == 200  # nginx: start == 0 declines


class _Ex:
    pass


@pytest.mark.parametrize("conf,uri,expected", [
    (StaticConf("/srv"), "/a/b.txt", b"/srv/a/b.txt"),
    (StaticConf("/srv/d/", alias=True, prefix="/i/"), "/i/x.gif", b"/srv/d/x.gif"),
    (StaticConf("/srv/d/", alias=True, prefix="/i"), "/i../etc/passwd", None),  # leaves the alias
    (StaticConf("/srv/d/", alias=True, prefix="/i/"), "/other", None),
    (StaticConf("/srv", alias=False), "/caf\udcff.txt", b"/srv/caf\xff.txt"),  # bytes that are not UTF-8
])
def test_file_paths(conf: StaticConf, uri: str, expected: bytes | None) -> None:
    assert Files(conf, "text/plain").path(_Ex(), uri) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("uri,expected", [
    ("/a.TXT", "text/plain"), ("/a.html", "text/html"), ("/noext", "application/x-default"),
    ("/dir.txt/file", "application/x-default"), ("/.txt", "application/x-default"), ("/a.", "application/x-default"),
])
def test_content_types(uri: str, expected: str) -> None:
    files = Files(StaticConf("/srv", types={"txt": "text/plain", "html": "text/html"}), "application/x-default")
    assert files.content_type(uri) == expected
