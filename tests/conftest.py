"""The one `daemon` fixture: real pyngx processes in a temporary prefix."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import Daemon


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The daemons of the tests (and the tests) keep their config statement cache in the
    session's temporary directory, not in the home directory of whoever runs them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """daemon(conf_text, start=True, **kw) -> a running Daemon; stopped by pid after the test.

    The test fails if the error log has [error], [alert], [crit] or [emerg]
    lines, unless it sets ``d.expect_errors = True``.
    """
    started: list[Daemon] = []

    def make(conf: str, *, start: bool = True, prefix: Path | None = None, **kw: Any) -> Daemon:
        d = Daemon(prefix or tmp_path / f"p{len(started)}", conf, **kw)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        d.stop()
    for d in started:
        if not d.expect_errors:
            d.assert_clean_log()
