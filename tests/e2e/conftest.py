"""End-to-end tests only: each may be retried once (pytest-rerunfailures), unit tests never."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a conftest's collection hook sees every item of the session: mark only this folder's
    for item in items:
        if HERE in Path(item.path).resolve().parents and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1))
