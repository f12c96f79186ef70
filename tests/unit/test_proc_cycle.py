"""Building a generation: init_by_python, sockets reused, nothing changed on failure."""
from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx.conf.model import Config, HttpConf, Listen, ServerConf
from pyngx.conf.pycode import compile_chunk
from pyngx.proc import cycle as cycles
from pyngx.runtime import core
from support import free_port


def make_config(prefix: Path, init: str | None = None, ports: tuple[int, ...] = ()) -> Config:
    conf = str(prefix / "conf" / "pyngx.conf")
    chunk = compile_chunk(init, conf, 5, "module") if init is not None else None
    servers = tuple(ServerConf(listens=(Listen("127.0.0.1", port, file=conf, line=9),)) for port in ports)
    http = HttpConf(python_path=(str(prefix),), init=chunk, servers=servers)
    return Config(file=conf, prefix=str(prefix), http=http)


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    saved = core.RT
    path = list(sys.path)
    yield
    core.install(saved)
    sys.path[:] = path
    for name in [n for n in sys.modules if n.startswith("pyngx_cycle_mod")]:
        del sys.modules[name]


def test_init_runs_in_a_fresh_namespace_and_sees_ngx(tmp_path: Path) -> None:
    cyc = cycles.build(make_config(tmp_path, "x = 41 + 1\nkind = ngx.process.type()"), bind=False)
    assert cyc.globals["x"] == 42
    assert core.RT.globals is cyc.globals and core.RT.config is cyc.config
    again = cycles.build(make_config(tmp_path, "y = 1"), cyc, generation=2, bind=False)
    assert "x" not in again.globals and again.generation == 2


def test_enable_privileged_agent_is_recorded(tmp_path: Path) -> None:
    cyc = cycles.build(make_config(tmp_path, "ngx.process.enable_privileged_agent()"), bind=False)
    assert cyc.want_agent
    assert not cycles.build(make_config(tmp_path, "pass"), bind=False).want_agent


def test_init_error_points_at_the_config_line(tmp_path: Path) -> None:
    with pytest.raises(cycles.CycleError) as info:
        cycles.build(make_config(tmp_path, "a = 1\nraise ValueError('boom')"), bind=False)
    err = info.value
    assert str(err) == f"init_by_python error: ValueError: boom in {tmp_path}/conf/pyngx.conf:6"
    assert "Traceback" in err.detail


def test_failed_build_changes_nothing(tmp_path: Path) -> None:
    port = free_port()
    good = cycles.build(make_config(tmp_path, "v = 1", (port,)))
    live = core.RT
    try:
        with pytest.raises(cycles.CycleError):
            cycles.build(make_config(tmp_path, "v = 2\n1/0", (port,)), good, generation=2)
        assert core.RT is live  # the one record put back, not fields restored one by one
        assert core.RT.globals is good.globals and core.RT.generation == 1
        assert good.sockets[("127.0.0.1", port)].fileno() >= 0
    finally:
        good.close_sockets()


def test_check_runs_init_and_binds_nothing(tmp_path: Path) -> None:
    port = free_port()
    cycles.check(make_config(tmp_path, "v = 1", (port,)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free
    with pytest.raises(cycles.CycleError, match="init_by_python error: NameError"):
        cycles.check(make_config(tmp_path, "undefined_name", (port,)))


def test_sockets_are_reused_for_the_same_address(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    first = cycles.build(make_config(tmp_path, None, (p1,)))
    second = cycles.build(make_config(tmp_path, None, (p1, p2)), first, generation=2)
    try:
        assert second.sockets[("127.0.0.1", p1)] is first.sockets[("127.0.0.1", p1)]
        first.close_sockets(keep=second)
        assert second.sockets[("127.0.0.1", p1)].fileno() >= 0
    finally:
        second.close_sockets()


def test_bind_error_in_nginx_words(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(cycles.CycleError, match=rf"bind\(\) to 127.0.0.1:{port} failed \(98: Address already in use\)"):
            cycles.build(make_config(tmp_path, None, (port,)))


def test_reload_sees_new_module_code(tmp_path: Path) -> None:
    mod = tmp_path / "pyngx_cycle_mod.py"
    mod.write_text("V = 1\n")
    first = cycles.build(make_config(tmp_path, "import pyngx_cycle_mod\nv = pyngx_cycle_mod.V"), bind=False)
    assert first.globals["v"] == 1
    mod.write_text("V = 2\n")  # the same second: no stale .pyc may hide it
    second = cycles.build(make_config(tmp_path, "import pyngx_cycle_mod\nv = pyngx_cycle_mod.V"), first,
                          generation=2, bind=False)
    assert second.globals["v"] == 2
    assert first.globals["pyngx_cycle_mod"].V == 1  # the old generation keeps its module


def test_refused_reload_keeps_the_old_modules(tmp_path: Path) -> None:
    mod = tmp_path / "pyngx_cycle_mod2.py"
    mod.write_text("V = 1\n")
    first = cycles.build(make_config(tmp_path, "import pyngx_cycle_mod2"), bind=False)
    old_module = sys.modules["pyngx_cycle_mod2"]
    mod.write_text("V = 2\n")
    with pytest.raises(cycles.CycleError):
        cycles.build(make_config(tmp_path, "import pyngx_cycle_mod2\n1/0"), first, generation=2, bind=False)
    assert sys.modules["pyngx_cycle_mod2"] is old_module


def test_purge_never_touches_the_standard_library() -> None:
    import json
    import os

    from pyngx.runtime import usercode

    stdlib = os.path.dirname(os.path.dirname(json.__file__))
    assert usercode.purge_modules([stdlib]) == []
    assert sys.modules["json"] is json


def test_a_generation_is_one_frozen_value_with_its_credentials_and_pid_path(tmp_path: Path) -> None:
    from dataclasses import FrozenInstanceError

    from pyngx.proc.spawn import Credentials

    p1, p2 = free_port(), free_port()
    creds = Credentials("nobody", 65534, 65534)
    cyc = cycles.build(make_config(tmp_path, None, (p1, p2)), creds=creds)
    try:
        assert cyc.creds is creds
        assert cyc.pid_path == str(tmp_path / "logs" / "pyngx.pid")
        with pytest.raises(FrozenInstanceError):
            cyc.sockets = {}  # type: ignore[misc]
        kept = cyc.kept_by(None)  # the agent's copy: no sockets, the same everything else
        assert kept.sockets == {} and kept.zones is cyc.zones and kept.creds is creds
        assert set(cyc.sockets) == {("127.0.0.1", p1), ("127.0.0.1", p2)}
    finally:
        cyc.close_sockets()
