"""Pieces of the hostile-input fixes that need no process: bounded caches, target escaping, repeats."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx import log
from pyngx.conf.model import LocationConf
from pyngx.http import uri
from pyngx.http.location import CACHED_LEN, Locations
from pyngx.runtime import repeats


def test_long_uris_are_not_remembered_by_the_location_cache() -> None:
    locs: Locations[str] = Locations([(LocationConf("", "/", None), "root")])  # type: ignore[arg-type]
    for i in range(100):
        assert locs.find(f"/{i:04d}" + "a" * 8000) == ("root", None)
    assert not locs.cache  # 4096 of them would hold 32 MB
    locs.find("/short")
    assert list(locs.cache) == ["/short"]
    assert CACHED_LEN <= 1024


@pytest.mark.parametrize("line", [
    b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\nGET /a%~b/\xff?q=%~%~~\xfe HTTP/1.1\r\n",
    b"GET /%~25~ HTTP/1.1\r\nX: \xe9\r\n\r\n",
])
def test_high_bytes_in_the_request_line_round_trip_through_escaping(line: bytes) -> None:
    escaped = uri.escape_line(line)
    assert escaped is not None and escaped.split(b"\n", 1)[0].lstrip(b"\r\n").isascii()
    target = escaped.lstrip(b"\r\n").split(b" ")[1]
    assert uri.unescape_line(target) == line.lstrip(b"\r\n").split(b" ")[1]
    assert escaped.split(b"\n", 1)[1:] == line.lstrip(b"\r\n").split(b"\n", 1)[1:] or b"\r\n" == line[:2]


def test_an_ascii_request_line_is_left_alone() -> None:
    assert uri.escape_line(b"GET /a%7e HTTP/1.1\r\nX: \xe9\r\n") is None  # the header is not the line


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "error.log"
    old_path, old_level = log.error_log.path, log.error_log.level
    log.error_log.open(str(path), log.INFO)
    yield path
    log.error_log.open(old_path, old_level)


def _fail(n: int) -> None:
    try:
        raise ValueError(f"failure {n}")
    except ValueError as exc:
        repeats.exception("callback failed", exc)


def test_repeated_failures_are_logged_once_then_counted(errlog: Path) -> None:
    async def main() -> None:
        for n in range(50):
            _fail(n)
        repeats.report_all()
    asyncio.run(main())
    text = errlog.read_text()
    assert text.count("Traceback") == 1 and "ValueError: failure 0" in text
    assert "callback failed: ValueError: failure 49 (repeated 49 times in" in text
    _fail(99)  # reported: the next one is logged in full again
    assert errlog.read_text().count("Traceback") == 2
