"""pyngx.conf.load: values, defaults, inheritance, paths, -g, include, dump, errors."""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import pytest

from pyngx import conf
from pyngx.conf import values
from pyngx.conf.model import HANDLER_NAME


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write conf/pyngx.conf under a fresh prefix (the cwd) and load it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()

    def go(text: str, extra: tuple[str, ...] = (), name: str = "conf/pyngx.conf") -> conf.Config:
        (tmp_path / name).write_text(text)
        return conf.load(name, str(tmp_path), extra)
    return go


def error(write: Any, text: str, extra: tuple[str, ...] = ()) -> str:
    with pytest.raises(conf.ConfError) as info:
        write(text, extra)
    return str(info.value)


def test_defaults(write: Any, tmp_path: Path) -> None:
    c = write("")
    assert (c.worker_processes, c.master_process, c.daemon) == (1, True, True)
    assert c.pid == str(tmp_path / "logs" / "pyngx.pid")
    assert c.error_log == conf.model.ErrorLogConf(str(tmp_path / "logs" / "error.log"), 4)
    assert (c.worker_shutdown_timeout, c.worker_connections, c.user, c.http) == (30.0, 1024, None, None)
    assert c.prefix == str(tmp_path) and c.file == str(tmp_path / "conf" / "pyngx.conf")


def test_http_defaults_and_inheritance(write: Any) -> None:
    c = write("""http {
        default_type text/html; client_max_body_size 2m;
        server { listen 8080; client_max_body_size 3k;
            location /a { default_type text/css; }
            location /b { client_max_body_size 0; }
        }
        server { listen 8081; location /c { } }
    }""")
    h = c.http
    assert (h.keepalive_timeout, h.client_header_timeout, h.client_body_timeout, h.send_timeout) == (75, 60, 60, 60)
    assert (h.max_pending_timers, h.max_running_timers, h.access_log.path) == (1024, 256, None)
    a, b = h.servers[0].locations
    (c_,) = h.servers[1].locations
    assert (a.default_type, a.client_max_body_size) == ("text/css", 3 * 1024)
    assert (b.default_type, b.client_max_body_size) == ("text/html", 0)
    assert (c_.default_type, c_.client_max_body_size) == ("text/html", 2 * 1024 * 1024)


def test_worker_processes_auto(write: Any) -> None:
    assert write("worker_processes auto;").worker_processes == (os.cpu_count() or 1)


def test_relative_paths_resolve_against_the_prefix(write: Any, tmp_path: Path) -> None:
    c = write("pid run/p.pid; error_log /var/log/x.log warn; http { python_path lib /abs; access_log logs/a.log;"
              " python_shared_dict d 1m persist=data/d.db; }")
    assert c.pid == str(tmp_path / "run" / "p.pid")
    assert c.error_log.path == "/var/log/x.log" and c.error_log.level == 5
    assert c.http.python_path == (str(tmp_path / "lib"), "/abs")
    assert c.http.access_log.path == str(tmp_path / "logs" / "a.log")
    assert c.http.shdicts[0].persist == str(tmp_path / "data" / "d.db")


def test_error_log_stderr(write: Any) -> None:
    assert write("error_log stderr debug;").error_log == conf.model.ErrorLogConf(None, 8)


@pytest.mark.parametrize("text, addr, port", [
    ("8080", "0.0.0.0", 8080), ("127.0.0.1:81", "127.0.0.1", 81), ("*:82", "0.0.0.0", 82),
    ("[::1]:83", "::1", 83), ("[::]:84", "::", 84), ("localhost:85", "127.0.0.1", 85), ("127.0.0.1", "127.0.0.1", 80),
])
def test_listen_forms(write: Any, text: str, addr: str, port: int) -> None:
    (ls,) = write(f"http {{ server {{ listen {text} reuseport; }} }}").http.servers[0].listens
    assert (ls.addr, ls.port, ls.reuseport, ls.line) == (addr, port, True, 1)


def test_server_without_listen_gets_nginx_default(write: Any) -> None:
    (ls,) = write("http { server { } }").http.servers[0].listens
    assert (ls.addr, ls.port) == ("0.0.0.0", 80 if os.geteuid() == 0 else 8000)


@pytest.mark.parametrize("args, modifier, pattern", [
    ("/a", "", "/a"), ("= /a", "=", "/a"), ("^~ /a", "^~", "/a"), ("~ ^/a$", "~", "^/a$"), ("~* \\.PY$", "~*", "\\.PY$"),
    ("=/a", "=", "/a"), ("~^/b", "~", "^/b"), ("~*^/c", "~*", "^/c"), ("^~/d", "^~", "/d"),
])
def test_location_modifiers(write: Any, args: str, modifier: str, pattern: str) -> None:
    (loc,) = write(f"http {{ server {{ location {args} {{ }} }} }}").http.servers[0].locations
    assert (loc.modifier, loc.pattern) == (modifier, pattern)
    if modifier.startswith("~"):
        assert loc.regex is not None and loc.regex.pattern == pattern
        assert bool(loc.regex.flags & 2) == (modifier == "~*")  # re.IGNORECASE
    else:
        assert loc.regex is None


@pytest.mark.parametrize("args, code, text", [
    ("204", 204, None), ("200 hello", 200, "hello"), ('404 "not found"', 404, "not found"),
    ("301 /elsewhere", 301, "/elsewhere"), ("https://x/", 302, "https://x/"), ("$scheme://h/", 302, "$scheme://h/"),
])
def test_return_forms(write: Any, args: str, code: int, text: str | None) -> None:
    (loc,) = write(f"http {{ server {{ location / {{ return {args}; }} }} }}").http.servers[0].locations
    assert loc.ret == conf.model.Return(code, text)


def test_set_and_status(write: Any) -> None:
    (loc,) = write("http { server { location ~ ^/(\\w+)$ { set $a $1; set $b \"x $a\"; pyngx_status; } } }") \
        .http.servers[0].locations
    assert loc.sets == (conf.model.SetVar("a", "$1"), conf.model.SetVar("b", "x $a")) and loc.status


def test_extra_directives_override_and_report_command_line(write: Any) -> None:
    c = write("daemon on; worker_processes 3;", ("daemon off; master_process off;",))
    assert (c.daemon, c.master_process, c.worker_processes) == (False, False, 3)
    assert error(write, "", ("foo;",)) == 'unknown directive "foo" in command line'
    assert error(write, "", ("daemon",)) == 'unexpected end of file, expecting ";" or "}" in command line'
    assert error(write, "", ("include x;",)) == '"include" directive is not allowed here in command line'


def test_include_glob_relative_to_main_file(write: Any, tmp_path: Path) -> None:
    sub = tmp_path / "conf" / "sites"
    sub.mkdir()
    (sub / "b.conf").write_text("server { listen 8082; }\n")
    (sub / "a.conf").write_text("server { listen 8081; include sites/inner.inc; }\n")  # the main file's dir, not sites/
    (sub / "inner.inc").write_text("server_name inner;\n")
    c = write("http { include sites/*.conf; include nothing/*.conf; }")
    servers = c.http.servers
    assert [s.listens[0].port for s in servers] == [8081, 8082]
    assert servers[0].server_names == ("inner",) and servers[0].file == "conf/sites/a.conf"
    assert c.files == tuple(str(p) for p in (tmp_path / "conf" / "pyngx.conf", sub / "a.conf", sub / "inner.inc",
                                             sub / "b.conf"))


def test_include_errors_name_the_included_file(write: Any, tmp_path: Path) -> None:
    (tmp_path / "conf" / "bad.inc").write_text("\n\nbogus;\n")
    assert error(write, "include bad.inc;") == 'unknown directive "bogus" in conf/bad.inc:3'
    (tmp_path / "conf" / "loop.inc").write_text("include loop.inc;\n")
    assert "include nesting is deeper than 32 files" in error(write, "include loop.inc;")


def test_missing_main_file(tmp_path: Path) -> None:
    with pytest.raises(conf.ConfError) as info:
        conf.load("conf/none.conf", str(tmp_path))
    assert str(info.value) == f'open() "{tmp_path}/conf/none.conf" failed (2: No such file or directory)'


def test_config_that_is_not_utf8(write: Any, tmp_path: Path) -> None:
    (tmp_path / "conf" / "pyngx.conf").write_bytes(b"worker_processes \xff;\n")
    with pytest.raises(conf.ConfError) as info:
        conf.load("conf/pyngx.conf", str(tmp_path))
    assert "is not UTF-8 text" in str(info.value)


def test_conf_error_fields() -> None:
    err = conf.ConfError("bad", "conf/x.conf", 3)
    assert (err.message, err.file, err.line, str(err)) == ("bad", "conf/x.conf", 3, "bad in conf/x.conf:3")
    assert conf.ConfError.__module__ == "pyngx.conf"


def test_handler_traceback_points_at_the_config_line(write: Any, tmp_path: Path) -> None:
    c = write("http {\n server {\n  location / {\n   content_by_python_block {\n"
              "    x = 1\n    raise ValueError(x)\n   }\n  }\n }\n}\n")
    chunk = c.http.servers[0].locations[0].content
    assert (chunk.kind, chunk.line, chunk.file) == ("handler", 4, str(tmp_path / "conf" / "pyngx.conf"))
    ns: dict[str, Any] = {}
    exec(chunk.code, ns)
    with pytest.raises(ValueError) as info:
        ns[HANDLER_NAME]()
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.line) == (chunk.file, 6, "raise ValueError(x)")


def test_python_file_errors_name_the_python_file(write: Any, tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "init.py").write_text("x = 1\n\ndef f(:\n")
    assert error(write, "http { init_by_python_file app/init.py; }") == "SyntaxError: invalid syntax in app/init.py:3"
    (tmp_path / "app" / "init.py").write_text("async def f(): pass\nawait f()\n")
    init = write("http { init_by_python_file app/init.py; }").http.init
    assert init.is_async and init.kind == "module" and init.file == str(tmp_path / "app" / "init.py")


def test_null_byte_in_python_is_a_conf_error(write: Any) -> None:
    assert error(write, "http { init_by_python_block { x = '\0' } }").startswith("SyntaxError: ")


@pytest.mark.parametrize("text, seconds", [
    ("30", 30), ("30s", 30), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("1.5s", 1.5),
])
def test_times(text: str, seconds: float) -> None:
    assert values.time(text) == seconds


@pytest.mark.parametrize("text, size", [("512", 512), ("64k", 65536), ("64K", 65536), ("1m", 1 << 20),
                                        ("2G", 2 << 30), ("0", 0)])
def test_sizes(text: str, size: int) -> None:
    assert values.size(text) == size


@pytest.mark.parametrize("fn, text", [(values.time, "x"), (values.time, ""), (values.time, "5 s"), (values.time, "5x"),
                                      (values.size, "1t"), (values.size, "-1"), (values.size, "1kb"),
                                      (values.number, "-2"), (values.number, "٣"), (values.flag, "yes")])
def test_invalid_values(fn: Any, text: str) -> None:
    with pytest.raises(values.Invalid):
        fn(text)


def test_dump_prints_every_file(write: Any, tmp_path: Path) -> None:
    (tmp_path / "conf" / "more.inc").write_text("worker_processes 2;")
    write("include more.inc;\n")
    out = conf.dump("conf/pyngx.conf", str(tmp_path))
    assert out == (f"# configuration file {tmp_path}/conf/pyngx.conf:\ninclude more.inc;\n\n"
                   f"# configuration file {tmp_path}/conf/more.inc:\nworker_processes 2;\n\n")


def test_windows_line_ends_and_a_byte_order_mark(write: Any, tmp_path: Path) -> None:
    text = ("\ufeffworker_processes 2;\r\nhttp {\r\n server {\r\n  location / {\r\n   content_by_python_block {\r\n"
            "    x = {'a': '}'}\r\n    raise ValueError(x)\r\n   }\r\n  }\r\n }\r\n}\r\n")
    (tmp_path / "conf" / "pyngx.conf").write_bytes(text.encode())
    c = conf.load("conf/pyngx.conf", str(tmp_path))
    assert c.worker_processes == 2
    chunk = c.http.servers[0].locations[0].content
    ns: dict[str, Any] = {}
    exec(chunk.code, ns)
    with pytest.raises(ValueError) as info:
        ns[HANDLER_NAME]()
    assert traceback.extract_tb(info.value.__traceback__)[-1].lineno == 7


def test_hostile_names_are_conf_errors(write: Any) -> None:
    assert error(write, 'include "a\0b";') == 'open() "conf/a\\x00b" failed (embedded null byte) in conf/pyngx.conf:1'
    assert error(write, "a {" * 100) == "blocks nested deeper than 64 in conf/pyngx.conf:1"
    assert error(write, "http { client_max_body_size ١m; }").startswith('"client_max_body_size" directive invalid value')
