"""pyngx.http.replies.http_date: the Date and Last-Modified format, whatever the locale."""
from __future__ import annotations

from email.utils import formatdate

import pytest

from pyngx.http.replies import http_date


@pytest.mark.parametrize("seconds", [0, 1, 951782400, 1796300597, 1796300597.75, 4102444799, 2 ** 32 + 17])
def test_what_email_utils_writes(seconds: float) -> None:
    assert http_date(seconds) == formatdate(seconds, usegmt=True)


def test_every_day_and_month_in_english() -> None:
    day = 86400
    for n in range(0, 366 * day, 13 * day + 3607):
        assert http_date(n) == formatdate(n, usegmt=True)
