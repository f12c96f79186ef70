"""PCRE-style named captures in regex locations, as nginx accepts them."""
from __future__ import annotations

from pathlib import Path

import pytest

from pyngx.conf import ConfError, load


def _location(tmp_path: Path, pattern: str):  # type: ignore[no-untyped-def]
    conf = tmp_path / "pyngx.conf"
    conf.write_text("http { server { listen 8080; location ~ %s { return 200 ok; } } }\n" % pattern)
    config = load(str(conf), str(tmp_path))
    assert config.http is not None
    return config.http.servers[0].locations[0]


def test_pcre_named_group_becomes_a_python_group(tmp_path: Path) -> None:
    loc = _location(tmp_path, r"^/u/(?<user>\w+)/(?P<item>\d+)$")
    m = loc.regex.match("/u/ann/42")
    assert m is not None and m.group("user") == "ann" and m.group("item") == "42" and m.group(1) == "ann"


def test_lookbehind_is_left_alone(tmp_path: Path) -> None:
    loc = _location(tmp_path, r"^/x(?<=x)(?<!y)$")
    assert loc.regex.match("/x") is not None


def test_bad_group_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfError, match=r"re.compile\(\) failed"):
        _location(tmp_path, r"^/(?<1bad>x)$")
