"""The request phases end to end: order, inheritance, ngx.exit in each, errors in each, ngx.ctx."""
from __future__ import annotations

import signal

from support import wait_until

CONF = r"""
worker_processes 1;
error_log logs/error.log info;
http {
    python_shared_dict stats 1m;
    log_by_python_block { ngx.shared.stats.incr("logged", 1, 0) }
    exit_worker_by_python_block { ngx.log(ngx.NOTICE, "exit_worker ran, exiting=", ngx.worker.exiting()) }
    init_worker_by_python_block {
        def _late(premature):
            ngx.log(ngx.NOTICE, "timer premature=", premature)
        ngx.timer.at(3600, _late)
    }
    server {
        listen 127.0.0.1:@PORT@;
        access_by_python_block {
            if ngx.var.arg_deny:
                ngx.exit(ngx.HTTP_FORBIDDEN)
        }
        location = /order {
            set $v "set";
            rewrite_by_python_block {
                ngx.ctx["seen"] = [ngx.var.v, ngx.get_phase()]
            }
            access_by_python_block {
                ngx.ctx["seen"].append(ngx.get_phase())
                ngx.exit(ngx.OK)
            }
            content_by_python_block {
                ngx.ctx["seen"].append(ngx.get_phase())
                ngx.say(",".join(ngx.ctx["seen"]))
            }
            header_filter_by_python_block {
                ngx.ctx["seen"].append(ngx.get_phase())
                ngx.header["X-Seen"] = ",".join(ngx.ctx["seen"])
            }
            body_filter_by_python_block {
                if ngx.arg[2]:
                    ngx.arg[1] = ngx.arg[1] + b"eof\n"
            }
            log_by_python_block {
                ngx.ctx["seen"].append(ngx.get_phase())
                ngx.shared.stats.set("order", ",".join(ngx.ctx["seen"]) + " " + str(ngx.status))
            }
        }
        location = /inherit { content_by_python_block { ngx.say("in") } }
        location = /deny-async {
            access_by_python_block {
                await ngx.sleep(0.01)
                ngx.status = 401
                ngx.header["WWW-Authenticate"] = "Basic"
                ngx.exit(401)
            }
            content_by_python_block { ngx.say("never") }
        }
        location = /rewrite-exit {
            rewrite_by_python_block { ngx.exit(ngx.HTTP_OK) }
            content_by_python_block { ngx.say("never") }
        }
        location = /rewrite-say {
            rewrite_by_python_block { ngx.say("from rewrite") }
            content_by_python_block { ngx.say("never") }
        }
        location = /rewrite-boom {
            rewrite_by_python_block { raise KeyError("in rewrite") }
            content_by_python_block { ngx.say("never") }
        }
        location = /access-boom {
            access_by_python_block { raise KeyError("in access") }
        }
        location = /hf-boom {
            header_filter_by_python_block { raise KeyError("in header filter") }
            content_by_python_block { ngx.say("body") }
        }
        location = /hf-exit {
            header_filter_by_python_block { ngx.exit(ngx.HTTP_NOT_FOUND) }
            content_by_python_block { ngx.say("body") }
        }
        location = /bf-upper {
            body_filter_by_python_block {
                ngx.arg[1] = ngx.arg[1].upper()
            }
            content_by_python_block {
                ngx.say("one")
                await ngx.flush()
                ngx.say("two")
            }
        }
        location = /bf-cut {
            body_filter_by_python_block {
                ngx.arg[1] = ngx.arg[1][:3]
                ngx.arg[2] = True
            }
            content_by_python_block {
                ngx.say("abcdef")
                await ngx.flush()
                ngx.say("more")
            }
        }
        location = /bf-boom {
            body_filter_by_python_block { raise KeyError("in body filter") }
            content_by_python_block { ngx.say("body") }
        }
        location = /log-boom {
            log_by_python_block { raise KeyError("in log") }
            content_by_python_block { ngx.say("fine") }
        }
        location = /log-say {
            log_by_python_block {
                try:
                    ngx.say("no")
                except ngx.WrongContextError as exc:
                    ngx.shared.stats.set("log-say", str(exc))
            }
            content_by_python_block { ngx.say("fine") }
        }
        location = /return {
            header_filter_by_python_block { ngx.header["X-Filtered"] = "yes" }
            return 200 "returned\n";
        }
        location = /auth {
            access_by_python_block {
                res = await ngx.location.capture("/check", args={"token": ngx.var.arg_token or ""})
                if res.status != ngx.HTTP_OK:
                    ngx.exit(res.status)
                ngx.ctx["user"] = res.body.decode().strip()
            }
            content_by_python_block { ngx.say("hello ", ngx.ctx["user"]) }
        }
        location = /check {
            content_by_python_block {
                if ngx.var.arg_token != "t0k":
                    ngx.exit(ngx.HTTP_UNAUTHORIZED)
                ngx.say("alice")
            }
        }
        location = /stats {
            access_by_python_block { pass }
            log_by_python_block { pass }
            content_by_python_block {
                s = ngx.shared.stats
                ngx.say(s.get("logged"), "|", s.get("order"), "|", s.get("log-say"))
            }
        }
    }
}
"""


def test_phases_run_in_nginx_order_with_one_ctx(daemon) -> None:
    d = daemon(CONF)
    status, headers, body = d.request("GET", "/order")
    assert status == 200
    assert body == b"set,rewrite,access,content\neof\n"
    assert headers["x-seen"] == "set,rewrite,access,content,header_filter"
    assert headers["content-length"] == str(len(body))
    got = wait_until(lambda: d.get("/stats")[1].split(b"|")[1] != b"None" and d.get("/stats")[1])
    assert got.split(b"|")[1] == b"set,rewrite,access,content,header_filter,log 200"


def test_server_phase_is_inherited_and_exit_ends_the_request(daemon) -> None:
    d = daemon(CONF)
    assert d.get("/inherit") == (200, b"in\n")
    status, body = d.get("/inherit?deny=1")
    assert status == 403 and b"403 Forbidden" in body
    status, headers, body = d.request("GET", "/deny-async")
    assert status == 401 and headers["www-authenticate"] == "Basic" and b"never" not in body
    assert d.get("/rewrite-exit") == (200, b"")
    assert d.get("/rewrite-say") == (200, b"from rewrite\n")


def test_errors_in_each_phase(daemon) -> None:
    d = daemon(CONF)
    d.expect_errors = True
    for path in ("/rewrite-boom", "/access-boom", "/hf-boom", "/bf-boom"):
        status, body = d.get(path)
        assert status == 500, path
        assert b"500 Internal Server Error" in body
    assert d.get("/log-boom") == (200, b"fine\n")
    log = d.wait_log("log_by_python error")
    for where, text in (("rewrite_by_python", "in rewrite"), ("access_by_python", "in access"),
                        ("header_filter_by_python", "in header filter"),
                        ("body_filter_by_python", "in body filter"), ("log_by_python", "in log")):
        assert f"{where} error" in log and text in log, where
    assert d.get("/inherit") == (200, b"in\n")  # the worker serves on


def test_filters(daemon) -> None:
    d = daemon(CONF)
    assert d.get("/bf-upper") == (200, b"ONE\nTWO\n")
    assert d.get("/bf-cut") == (200, b"abc")
    status, headers, body = d.request("GET", "/hf-exit")
    assert status == 404 and b"404 Not Found" in body
    status, headers, body = d.request("GET", "/return")
    assert (status, headers["x-filtered"], body) == (200, "yes", b"returned\n")


def test_log_phase_counts_and_refuses_output(daemon) -> None:
    d = daemon(CONF)
    for _ in range(3):
        d.get("/inherit")
    d.get("/log-say")
    def logged():
        parts = d.get("/stats")[1].split(b"|")
        return int(parts[0]) >= 3 and parts[2] != b"None\n" and parts
    parts = wait_until(logged)
    assert parts[2].startswith(b"ngx.say: API disabled in the context of log_by_python")


def test_exit_worker_runs_before_timers_fire_premature(daemon) -> None:
    d = daemon(CONF)
    d.signal(signal.SIGQUIT)
    log = d.wait_log("timer premature=True")
    assert "exit_worker ran, exiting=True" in log
    assert log.index("exit_worker ran") < log.index("timer premature=True")


def test_access_by_subrequest_and_head(daemon) -> None:
    d = daemon(CONF)
    assert d.get("/auth?token=t0k") == (200, b"hello alice\n")
    assert d.get("/auth?token=bad")[0] == 401
    status, headers, body = d.request("HEAD", "/order")
    assert status == 200 and body == b"" and headers["x-seen"].endswith("header_filter")
