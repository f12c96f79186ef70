"""log.LogStream: what print() and sys.stdout/sys.stderr become in a serving process."""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx import log


@pytest.fixture
def error_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "error.log"
    saved = (log.error_log.path, log.error_log.level, log.error_log.fd, log.error_log.context)
    log.error_log.open(str(path), log.NOTICE)
    try:
        yield path
    finally:
        fd = log.error_log.fd
        log.error_log.path, log.error_log.level, log.error_log.fd, log.error_log.context = saved
        os.close(fd)


def messages(path: Path) -> list[str]:
    return [line.split("#0: ", 1)[1] for line in path.read_text().splitlines()]


def test_each_line_is_a_notice_line_tagged_with_the_writer(error_log: Path) -> None:
    stream = log.LogStream(1, None)
    line = sys._getframe().f_lineno + 1
    print("a", 1, file=stream, end="")
    print("b\nc", file=stream)
    stream.write("partial")
    assert len(messages(error_log)) == 2  # "partial" waits for its newline
    stream.flush()
    where = f"[python] {__file__}:{line}: "
    # a line is tagged with the write that began it
    assert messages(error_log) == [where + "a 1b", f"[python] {__file__}:{line + 1}: c", f"[python] {__file__}:{line + 2}: partial"]
    assert all("[notice]" in ln for ln in error_log.read_text().splitlines())


def test_a_level_above_notice_drops_them_and_a_terminal_still_shows_them(error_log: Path) -> None:
    log.error_log.level = log.WARN
    term = io.StringIO()
    stream = log.LogStream(1, term)
    print("shown", file=stream)
    assert term.getvalue() == "shown\n" and messages(error_log) == []
    assert stream.isatty() and stream.fileno() == 1 and stream.writable()


def test_lines_written_in_a_request_end_with_its_context(error_log: Path) -> None:
    log.error_log.context = lambda: ', client: 10.0.0.1, server: x, request: "GET / HTTP/1.1"'
    log.notice("hello")
    assert messages(error_log) == ['hello, client: 10.0.0.1, server: x, request: "GET / HTTP/1.1"']
