"""Shared dict zones across the life of the tree: kept on reload, rebuilt on resize, persisted."""
from __future__ import annotations

import signal

from support import Daemon, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    python_shared_dict cache @SIZE@;
    python_shared_dict store 64k persist=logs/store.db;
    init_by_python_block {
        ngx.shared.cache.incr("boots", 1, 0)
        ngx.shared.store.incr("boots", 1, 0)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            content_by_python_block {
                c, s = ngx.shared.cache, ngx.shared.store
                ngx.say(c.get("boots"), " ", s.get("boots"), " ", c.capacity())
            }
        }
    }
}
"""


def state(d: Daemon) -> list[int]:
    status, body = d.get("/")
    assert status == 200, body
    return [int(x) for x in body.split()]


def reload(d: Daemon) -> None:
    result = d.pyngx("-s", "reload")
    assert result.returncode == 0, result.stderr


def test_zones_are_kept_rebuilt_and_persisted(daemon: object) -> None:
    d = daemon(CONF.replace("@SIZE@", "1m"))  # type: ignore[operator]
    wait_until(lambda: d.get("/")[0] == 200, 10)
    assert state(d) == [1, 1, 1 << 20]
    reload(d)
    wait_until(lambda: state(d) == [2, 2, 1 << 20], 10, what="the same zones after a reload")
    d.write_conf(CONF.replace("@SIZE@", "2m"))
    reload(d)
    wait_until(lambda: state(d) == [3, 3, 2 << 20], 10, what="a resized zone that kept its items")
    d.signal(signal.SIGQUIT)
    assert d.proc is not None and d.proc.wait(timeout=15) == 0
    assert (d.prefix / "logs" / "store.db").exists()
    d.stop()
    again = daemon(CONF.replace("@SIZE@", "2m"), prefix=d.prefix)  # type: ignore[operator]
    wait_until(lambda: again.get("/")[0] == 200, 10)
    assert state(again) == [1, 4, 2 << 20]  # the persisted zone came back, the other started empty


def test_a_corrupt_persist_file_is_ignored(daemon: object) -> None:
    d = daemon(CONF.replace("@SIZE@", "1m"), start=False)  # type: ignore[operator]
    (d.prefix / "logs" / "store.db").write_bytes(b"this is not a zone dump")
    d.start()
    wait_until(lambda: d.get("/")[0] == 200, 10)
    assert state(d) == [1, 1, 1 << 20]
    assert 'ignoring shared dict "store" persist file' in d.error_log()
