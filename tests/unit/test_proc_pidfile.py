"""The pid file and the reload verdict file (no processes but our own)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyngx.proc import pidfile


def test_write_is_atomic_and_read_back(tmp_path: Path) -> None:
    path = str(tmp_path / "pyngx.pid")
    pidfile.write(path, 4242)
    assert Path(path).read_text() == "4242\n"
    assert pidfile.read(path) == 4242
    assert os.listdir(tmp_path) == ["pyngx.pid"]  # no temporary left behind


def test_missing_pid_file_says_open_failed(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.pid")
    with pytest.raises(pidfile.PidFileError, match=r'open\(\) ".*nope.pid" failed \(2: No such file or directory\)'):
        pidfile.read(path)


@pytest.mark.parametrize("text", ["", "abc", "-3", "0"])
def test_invalid_pid_says_invalid_pid_number(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pyngx.pid"
    path.write_text(text + "\n")
    with pytest.raises(pidfile.PidFileError, match="invalid PID number"):
        pidfile.read(str(path))


def test_write_into_missing_directory_names_the_call(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r'open\(\) ".*" failed \(2: '):
        pidfile.write(str(tmp_path / "no" / "pyngx.pid"), 1)


def test_unlink_only_when_ours(tmp_path: Path) -> None:
    path = str(tmp_path / "pyngx.pid")
    pidfile.write(path, 1234)
    pidfile.unlink_if_ours(path, 999)
    assert os.path.exists(path)
    pidfile.unlink_if_ours(path, 1234)
    assert not os.path.exists(path)
    pidfile.unlink_if_ours(path, 1234)  # already gone: quiet


def test_alive() -> None:
    assert pidfile.alive(os.getpid())
    assert not pidfile.alive(2**22 + 12345)


def test_verdict_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "pyngx.pid")
    assert pidfile.read_verdict(path) == ""
    pidfile.write_verdict(path, 77, 1, pidfile.OK, "serving")
    line = pidfile.read_verdict(path)
    assert pidfile.parse_verdict(line, 77) == ("ok", "serving")
    assert pidfile.parse_verdict(line, 78) is None  # another master's answer is not ours
    pidfile.write_verdict(path, 77, 2, pidfile.FAILED, 'unknown directive "foo"\nin x:1')
    second = pidfile.read_verdict(path)
    assert second != line
    assert pidfile.parse_verdict(second, 77) == ("failed", 'unknown directive "foo" in x:1')
    pidfile.remove_verdict(path)
    assert pidfile.read_verdict(path) == ""
