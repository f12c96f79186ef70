"""pyngx.conf.stmtcache: a start reuses the statements of unchanged config files, never stale ones."""
from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyngx import conf
from pyngx.conf import stmtcache

CONF = """worker_processes 2;
http {
    include conf.d/*.conf;
    server {
        listen 127.0.0.1:8080;
        location / { content_by_python_block { ngx.say("hello") } }
    }
}
"""


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "conf" / "conf.d").mkdir(parents=True)
    (tmp_path / "conf" / "pyngx.conf").write_text(CONF)
    (tmp_path / "conf" / "conf.d" / "a.conf").write_text("python_shared_dict a 1m;\n")
    return tmp_path


def _entries(prefix: Path) -> list[Path]:
    return sorted((prefix / "cache" / "pyngx").glob("*.stmts"))


def _load_in_a_new_process(prefix: Path, *extra: str) -> tuple[str, bool]:
    """(the shared dicts and the content block's file, whether lark was imported) from a fresh process."""
    code = ("import sys\nfrom pyngx import conf\n"
            f"c = conf.load('conf/pyngx.conf', {str(prefix)!r}, {list(extra)!r})\n"
            "print([s.name for s in c.http.shdicts], c.http.servers[0].locations[0].content.file, c.daemon)\n"
            "print('lark' in sys.modules)")
    env = {**os.environ, "XDG_CACHE_HOME": str(prefix / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    config, lark = out.stdout.splitlines()
    return config, lark == "True"


def test_a_second_load_reads_the_statements_without_the_parser(prefix: Path) -> None:
    first = _load_in_a_new_process(prefix, "daemon off;")
    assert first[1] is True  # parsed for real, and remembered: the main file, the include, the -g text
    assert len(_entries(prefix)) == 3
    second = _load_in_a_new_process(prefix, "daemon off;")
    assert second == (first[0], False)
    assert first[0] == f"['a'] {prefix}/conf/pyngx.conf False"


def test_texts_that_alternate_stay_cached(prefix: Path) -> None:
    """The systemd unit tests with one -g text (ExecStartPre) and starts with another."""
    _load_in_a_new_process(prefix, "pid logs/a.pid;")
    _load_in_a_new_process(prefix, "daemon off; pid logs/a.pid;")
    assert _load_in_a_new_process(prefix, "pid logs/a.pid;")[1] is False
    assert _load_in_a_new_process(prefix, "daemon off; pid logs/a.pid;")[1] is False


def test_another_current_directory_reads_the_same_entry_with_its_own_file_names(prefix: Path) -> None:
    code = ("import sys\nfrom pyngx import conf\n"
            f"c = conf.load({str(prefix / 'conf' / 'pyngx.conf')!r}, {str(prefix)!r})\n"
            "print(c.http.servers[0].file, 'lark' in sys.modules)")
    env = {**os.environ, "XDG_CACHE_HOME": str(prefix / "cache")}
    shown = []
    for cwd in (prefix, prefix / "conf", prefix / "conf"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                             cwd=cwd)
        assert out.returncode == 0, out.stderr
        shown.append(out.stdout.split())
    assert shown == [["conf/pyngx.conf", "True"], ["pyngx.conf", "False"], ["pyngx.conf", "False"]]


def test_the_same_config_either_way(prefix: Path) -> None:
    parsed = conf.load("conf/pyngx.conf", str(prefix), ["daemon off;"], reuse=False)
    cached = conf.load("conf/pyngx.conf", str(prefix), ["daemon off;"])
    assert cached == parsed  # code objects compare by their code, names and lines


def test_an_edited_file_is_parsed_again_and_a_new_include_is_read(prefix: Path) -> None:
    conf.load("conf/pyngx.conf", str(prefix))
    (prefix / "conf" / "conf.d" / "a.conf").write_text("python_shared_dict a 2m;\n")
    (prefix / "conf" / "conf.d" / "b.conf").write_text("python_shared_dict b 1m;\n")
    config = conf.load("conf/pyngx.conf", str(prefix))
    assert config.http is not None
    assert [(s.name, s.size) for s in config.http.shdicts] == [("a", 2 << 20), ("b", 1 << 20)]


def _forge(prefix: Path, forged: str = "worker_processes 7") -> None:
    """Rewrite the main file's entry so that its statements say FORGED instead of worker_processes 2."""
    cache = stmtcache.StmtCache.default()
    assert cache is not None
    main = str(prefix / "conf" / "pyngx.conf")
    shown = conf.parse.display_path(main)
    stmts = conf.parse.parse_text(CONF.replace("worker_processes 2", forged), shown, main)
    cache.put(CONF, shown, main, stmts)


def test_the_cache_is_used_and_pyngx_t_parses_for_real(prefix: Path) -> None:
    conf.load("conf/pyngx.conf", str(prefix))
    _forge(prefix)
    assert conf.load("conf/pyngx.conf", str(prefix)).worker_processes == 7  # the entry was read
    assert conf.load("conf/pyngx.conf", str(prefix), reuse=False).worker_processes == 2  # what -t does
    assert conf.load("conf/pyngx.conf", str(prefix)).worker_processes == 2  # and the entry was rewritten


def test_pyngx_t_does_not_read_the_cache(prefix: Path) -> None:
    conf.load("conf/pyngx.conf", str(prefix))
    _forge(prefix, "bogus 1")
    with pytest.raises(conf.ConfError, match='unknown directive "bogus"'):
        conf.load("conf/pyngx.conf", str(prefix))
    (prefix / "logs").mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(prefix / "cache")}
    out = subprocess.run([sys.executable, "-m", "pyngx", "-p", str(prefix), "-t"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other fingerprint", "group writable file",
                                    "world writable directory", "symlink"])
def test_a_broken_or_unsafe_entry_is_ignored(prefix: Path, damage: str) -> None:
    conf.load("conf/pyngx.conf", str(prefix))
    _forge(prefix)
    main_entry = max(_entries(prefix), key=lambda p: p.stat().st_mtime_ns)
    data = main_entry.read_bytes()
    if damage == "garbage":
        main_entry.write_bytes(b"\x00not marshal")
    elif damage == "truncated":
        main_entry.write_bytes(data[:len(data) // 2])
    elif damage == "other fingerprint":
        entry = list(marshal.loads(data))
        entry[1] = (1, 2, 3)
        main_entry.write_bytes(marshal.dumps(tuple(entry)))
    elif damage == "group writable file":
        main_entry.chmod(0o620)
    elif damage == "world writable directory":
        main_entry.parent.chmod(0o777)
    else:
        real = prefix / "elsewhere.stmts"
        main_entry.rename(real)
        main_entry.symlink_to(real)
    assert conf.load("conf/pyngx.conf", str(prefix)).worker_processes == 2


def test_errors_are_not_cached_and_stay_errors(prefix: Path) -> None:
    (prefix / "conf" / "conf.d" / "a.conf").write_text("python_shared_dict a 1m\n")
    for _ in range(2):
        with pytest.raises(conf.ConfError, match=r'unexpected end of file, expecting ";" or "}" in .*a.conf:2'):
            conf.load("conf/pyngx.conf", str(prefix))


def test_no_usable_directory_means_parsing_every_time(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (prefix / "cache").write_text("a file where the directory would be")
    assert conf.load("conf/pyngx.conf", str(prefix)).worker_processes == 2
    assert conf.load("conf/pyngx.conf", str(prefix)).worker_processes == 2


def test_the_directory_is_xdg_s_or_the_home_s(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = stmtcache.StmtCache.default()
    assert cache is not None and cache.dir == str(prefix / "cache" / "pyngx")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid, says the spec: ignored
    monkeypatch.setenv("HOME", str(prefix / "home"))
    cache = stmtcache.StmtCache.default()
    assert cache is not None and cache.dir == str(prefix / "home" / ".cache" / "pyngx")


def test_old_entries_are_pruned(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stmtcache, "KEEP", 3)
    for i in range(6):
        conf.parse.parse_text(f"a {i};", f"f{i}.conf", f"/f{i}.conf", stmtcache.StmtCache.default())
    assert len(_entries(prefix)) == 3
