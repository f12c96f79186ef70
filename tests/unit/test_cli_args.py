"""pyngx.cli in-process: option parsing, usage errors, -v/-V/-h (nothing that starts processes)."""
from __future__ import annotations

import pytest

from pyngx import cli


def test_parse_args_forms() -> None:
    o = cli.parse_args(["-p", "/srv", "-c/etc/x.conf", "-g", "daemon off;", "-gworker_processes 2;", "-tq"])
    assert (o.prefix, o.conf, o.extra, o.test, o.quiet) == ("/srv", "/etc/x.conf",
                                                             ["daemon off;", "worker_processes 2;"], True, True)
    o = cli.parse_args(["--shdict", "a 1m", "--shdict", "b 64k", "-e", "print(1)"])
    assert (o.shdicts, o.code) == ([("a", 1 << 20), ("b", 64 << 10)], "print(1)")
    assert cli.parse_args(["-s", "reload"]).signal == "reload"
    assert cli.parse_args(["-T"]).dump and cli.parse_args(["-V"]).version == 2 and cli.parse_args(["-v"]).version == 1


@pytest.mark.parametrize("args, message", [
    (["-x"], 'pyngx: invalid option: "x"\n'),
    (["-tz"], 'pyngx: invalid option: "tz"\n'),
    (["-s", "restart"], 'pyngx: invalid option: "-s restart"\n'),
    (["-c"], 'pyngx: option "-c" requires conf\n'),
    (["-p"], 'pyngx: option "-p" requires prefix\n'),
    (["--shdict", "only-a-name"], "pyngx: invalid --shdict \"only-a-name\", it must be 'NAME SIZE' with SIZE from 8k to 4g\n"),
    (["--shdict", "a 1q"], "pyngx: invalid --shdict \"a 1q\", it must be 'NAME SIZE' with SIZE from 8k to 4g\n"),
    (["stray"], 'pyngx: invalid option: "stray"\n'),
    (["--long"], 'pyngx: invalid option: "--long"\n'),
])
def test_bad_command_lines(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert cli.main(args) == 1
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", message)


def test_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-v"]) == 0
    assert capsys.readouterr().err == "pyngx version: pyngx/0.1.0\n"
    assert cli.main(["-V"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "pyngx version: pyngx/0.1.0" and lines[1].startswith("built with Python 3.")
    assert all(f"{dep} " in lines[2] for dep in cli.DEPENDENCIES)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-h"]) == 0
    err = capsys.readouterr().err
    assert "Usage: pyngx" in err and "-e code" in err and "--shdict" in err


@pytest.mark.parametrize("flag", ["-h", "-?", "--help"])
def test_help_lists_every_option_once(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert cli.main([flag]) == 0
    err = capsys.readouterr().err
    options = [line.split(":")[0].strip() for line in err.splitlines() if line.startswith("  -")]
    named = {name for opt in options for name in opt.split()[0].split(",")}
    parsed = {*cli._WITH_VALUE, *(f"-{ch}" for ch in cli._FLAGS), "-v", "-V", "--help"}
    assert named == parsed  # every option the parser takes, and nothing else
    assert len(options) == len(set(options))  # one line each


def test_capital_v_names_the_shared_dict_engine(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pyngx.shm import shdict

    assert cli.main(["-V"]) == 0
    engine = capsys.readouterr().err.splitlines()[3]
    built = "C extension (pyngx.shm._shdict)" if shdict.c_available() else "pure Python (the C extension"
    assert engine.startswith("shared dict engine: " + built)
    monkeypatch.setenv("PYNGX_SHDICT_PURE", "1")
    assert cli.main(["-V"]) == 0
    engine = capsys.readouterr().err.splitlines()[3]
    assert engine.startswith("shared dict engine: pure Python")


def test_capital_v_names_the_path_of_plain_http_requests(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pyngx.http import protocol

    assert cli.main(["-V"]) == 0
    line = capsys.readouterr().err.splitlines()[4]
    if protocol.FAST:
        assert line == "plain HTTP requests: C extension (pyngx.http._fast)"
    else:  # not built, or this run has PYNGX_HTTP_PURE=1 already
        assert line.startswith("plain HTTP requests: Python (")
    monkeypatch.setenv("PYNGX_HTTP_PURE", "1")
    assert cli.main(["-V"]) == 0
    assert capsys.readouterr().err.splitlines()[4].startswith("plain HTTP requests: Python (PYNGX_HTTP_PURE=1")
