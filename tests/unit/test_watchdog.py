"""The event loop watchdog in one process: a blocked loop is reported with its block, and counted."""
from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from pyngx import conf, log
from pyngx.runtime import watchdog


@pytest.fixture
def error_log(tmp_path: Path) -> Iterator[Path]:
    """The error log goes to a file for the test (warn level)."""
    path = tmp_path / "error.log"
    saved = (log.error_log.path, log.error_log.level, log.error_log.fd)
    log.error_log.open(str(path), log.WARN)
    yield path
    fd = log.error_log.fd
    log.error_log.path, log.error_log.level, log.error_log.fd = saved
    if fd > 2:
        os.close(fd)


def blocking_call() -> None:
    time.sleep(0.3)  # the line the watchdog must name


BLOCK_LINE = blocking_call.__code__.co_firstlineno + 1


def test_a_stall_is_warned_once_with_the_block_and_its_end_is_logged(error_log: Path) -> None:
    async def main() -> watchdog.Watchdog:
        loop = asyncio.get_running_loop()
        block = watchdog.Block(__file__, blocking_call.__code__.co_firstlineno, "content_by_python of location = /x")
        dog = watchdog.Watchdog(loop, 0.1, None, [block], "worker")
        dog.start()
        await asyncio.sleep(0.1)
        blocking_call()
        deadline = time.monotonic() + 5
        while dog.stalled_since or not dog.longest:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        dog.stop()
        return dog

    dog = uvloop.run(main())
    text = error_log.read_text()
    assert text.count("blocked for") == 1 and text.count("ran again after a stall of") == 1
    assert re.search(rf"\[warn\] .*event loop of this worker process blocked for 0\.\d+s \(worker_stall_warn 100ms\) "
                     rf"in content_by_python of location = /x at {re.escape(__file__)}:{BLOCK_LINE}, stack", text)
    assert "time.sleep(0.3)  # the line the watchdog must name" in text
    assert "run_until_complete" not in text  # the frames that run the loop are left out
    lasted = float(re.search(r"after a stall of (\d+\.\d+)s", text).group(1))
    assert 0.2 < lasted < 1.0 and dog.stalls == 1 and abs(dog.longest - lasted) < 0.001


def test_a_busy_loop_that_keeps_turning_is_no_stall(error_log: Path) -> None:
    async def main() -> watchdog.Watchdog:
        dog = watchdog.Watchdog(asyncio.get_running_loop(), 0.1, None, [], "worker")
        dog.start()
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            time.sleep(0.01)  # short steps, each under the threshold
            await asyncio.sleep(0)
        dog.stop()
        return dog

    dog = uvloop.run(main())
    assert dog.stalls == 0 and "blocked" not in error_log.read_text()


def test_blocks_of_names_every_python_block(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text("http {\n  init_worker_by_python_block {\n    x = 1\n  }\n  server {\n"
                                     "    location = /a {\n      content_by_python_block {\n        ngx.say(1)\n"
                                     "      }\n    }\n  }\n}\n")
    config = conf.load("c.conf", str(tmp_path))
    names = sorted((b.label, b.line) for b in watchdog.blocks_of(config))
    assert names == [("content_by_python of location = /a", 7), ("init_worker_by_python", 2)]  # the "{" lines
    assert all(b.filename == str(tmp_path / "c.conf") for b in watchdog.blocks_of(config))


def test_tick() -> None:
    assert watchdog.tick_for(0.2, 60.0) == 0.05
    assert watchdog.tick_for(None, 60.0) == 0.05
    assert watchdog.tick_for(0.02, None) == 0.005
