"""The request API beyond content: ngx.req.*, ngx.exec, subrequests, send_headers, eof, on_abort, pids."""
from __future__ import annotations

import json
import socket
import time

from support import pid_alive, wait_until

CONF = r"""
worker_processes 2;
error_log logs/error.log info;
http {
    python_shared_dict s 1m;
    server {
        listen 127.0.0.1:@PORT@;
        location = /hdr {
            rewrite_by_python_block {
                ngx.req.set_header("X-Added", "yes")
                ngx.req.set_header("X-Many", ["a", "b"])
                ngx.req.clear_header("X-Drop")
                ngx.req.set_uri_args({"q": "a b", "flag": True})
                ngx.req.set_method(ngx.HTTP_PUT)
                ngx.req.set_uri("/elsewhere")
            }
            content_by_python_block {
                import json
                ngx.say(json.dumps({
                    "added": ngx.var.http_x_added, "many": ngx.req.get_headers().get("x-many"),
                    "drop": ngx.var.http_x_drop, "args": ngx.var.args, "method": ngx.req.get_method(),
                    "uri": ngx.var.uri, "version": ngx.req.http_version(),
                    "raw": ngx.req.raw_header(),
                }))
            }
        }
        location = /jump {
            rewrite_by_python_block {
                ngx.ctx["kept"] = "ctx"
                ngx.req.set_uri("/target", True)
            }
        }
        location = /target { content_by_python_block { ngx.say("target ", ngx.var.uri, " ", ngx.ctx.get("kept")) } }
        location = /exec {
            content_by_python_block {
                ngx.ctx["lost"] = True
                ngx.exec("/target2", {"a": "1"})
            }
        }
        location = /exec-phased {
            access_by_python_block { ngx.exec("/target2?b=2") }
        }
        location = /target2 {
            content_by_python_block { ngx.say("t2 ", ngx.var.args, " ", ngx.ctx.get("lost")) }
        }
        location = /exec-loop { content_by_python_block { ngx.exec("/exec-loop") } }
        location = /exec-named { content_by_python_block { ngx.exec("@named") } }
        location @named { content_by_python_block { ngx.say("named ", ngx.var.uri) } }
        location = /post {
            content_by_python_block {
                await ngx.req.read_body()
                args = ngx.req.get_post_args()
                ngx.req.discard_body()
                ngx.say(args["a"], " ", args["b"], " ", ngx.req.get_body_data())
            }
        }
        location = /sub {
            content_by_python_block {
                res = await ngx.location.capture("/child", args={"n": "1"})
                ngx.say(res.status, " ", res.header.get("X-Child"), " ", res.body.decode().strip())
                many = await ngx.location.capture_multi([("/child", {"args": "n=2"}), "/child?n=3",
                                                          ("/missing",)])
                ngx.say(",".join(f"{r.status}:{r.body.decode().strip()}" for r in many[:2]), " ", many[2].status)
                res = await ngx.location.capture("/child", method=ngx.HTTP_POST, body="hello")
                ngx.say(res.body.decode().strip())
            }
        }
        location = /child {
            access_by_python_block { ngx.exit(403) }
            content_by_python_block {
                await ngx.sleep(0.01)
                ngx.header["X-Child"] = "c"
                ngx.say(ngx.req.get_method(), " n=", ngx.var.arg_n, " ", ngx.req.get_body_data())
            }
        }
        location = /send-headers {
            content_by_python_block {
                ngx.header["X-Early"] = "1"
                before = ngx.headers_sent
                ngx.send_headers()
                ngx.say(before, " ", ngx.headers_sent)
            }
        }
        location = /eof {
            content_by_python_block {
                ngx.say("done")
                ngx.eof()
                ngx.say("dropped")
                await ngx.sleep(0.2)
                ngx.shared.s.set("after-eof", "ran")
            }
        }
        location = /abort {
            content_by_python_block {
                def gone():
                    ngx.shared.s.set("aborted", "yes")
                    ngx.exit(499)
                ngx.on_abort(gone)
                await ngx.sleep(30)
                ngx.shared.s.set("aborted", "not cancelled")
            }
        }
        location = /pipe {
            content_by_python_block {
                from pyngx import pipe
                proc = pipe.spawn(["sleep", "300"])
                ngx.shared.s.set("pipe-pid", proc.pid())
                if ngx.var.arg_fail:
                    raise RuntimeError("handler failed with a pipe open")
                ngx.say(proc.pid())
            }
        }
        location = /pids {
            content_by_python_block {
                from pyngx import ipc
                import json
                ngx.say(json.dumps({"pids": ngx.worker.pids(), "me": ngx.worker.pid(),
                                    "others": ipc.get_other_worker_pids()}))
            }
        }
        location = /get {
            content_by_python_block { ngx.say(ngx.shared.s.get(ngx.var.arg_k)) }
        }
        location = /wrong {
            content_by_python_block {
                out = []
                for call in (lambda: ngx.req.set_uri("/x", True), lambda: ngx.arg[1]):
                    try:
                        call()
                    except ngx.WrongContextError as exc:
                        out.append(str(exc))
                ngx.say("\n".join(out))
            }
        }
    }
}
"""


def test_request_rewriting_is_seen_later(daemon) -> None:
    d = daemon(CONF)
    status, body = d.get("/hdr?x=1", headers={"X-Drop": "d", "X-Many": "old"})
    got = json.loads(body)
    assert got["added"] == "yes" and got["many"] == ["a", "b"] and got["drop"] is None
    assert got["args"] == "q=a%20b&flag" and got["method"] == "PUT" and got["uri"] == "/elsewhere"
    assert got["version"] == 1.1
    assert got["raw"].startswith("GET /hdr?x=1 HTTP/1.1\r\n") and "X-Drop: d\r\n" in got["raw"]
    assert got["raw"].endswith("\r\n\r\n")


def test_internal_redirects(daemon) -> None:
    d = daemon(CONF)
    d.expect_errors = True
    assert d.get("/jump") == (200, b"target /target ctx\n")
    assert d.get("/exec") == (200, b"t2 a=1 None\n")
    assert d.get("/exec-phased") == (200, b"t2 b=2 None\n")
    assert d.get("/exec-named") == (200, b"named @named\n")
    assert d.get("/exec-loop")[0] == 500
    assert "rewrite or internal redirection cycle" in d.error_log()


def test_post_args_and_discard(daemon) -> None:
    d = daemon(CONF)
    assert d.get("/post", body=b"a=1&b=x+y", headers={"Content-Type": "application/x-www-form-urlencoded"}) == \
        (200, b"1 x y None\n")


def test_subrequests(daemon) -> None:
    d = daemon(CONF)
    status, body = d.get("/sub")
    assert status == 200
    assert body.decode().splitlines() == ["200 c GET n=1 None", "200:GET n=2 None,200:GET n=3 None 404",
                                          "POST n=None hello"]


def test_send_headers_and_eof(daemon) -> None:
    d = daemon(CONF)
    status, headers, body = d.request("GET", "/send-headers")
    assert (status, headers["x-early"], body) == (200, "1", b"False True\n")
    start = time.monotonic()
    assert d.get("/eof") == (200, b"done\n")
    assert time.monotonic() - start < 0.2 + 0.15  # answered before the handler's sleep ends (loose)
    wait_until(lambda: d.get("/get?k=after-eof") == (200, b"ran\n"))


def test_on_abort(daemon) -> None:
    d = daemon(CONF)
    with socket.create_connection(("127.0.0.1", d.port)) as s:
        s.sendall(b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    wait_until(lambda: d.get("/get?k=aborted") == (200, b"yes\n"))
    time.sleep(0.3)
    assert d.get("/get?k=aborted") == (200, b"yes\n")  # the request was ended, not resumed


def test_pipes_die_with_their_request(daemon) -> None:
    d = daemon(CONF)
    d.expect_errors = True
    status, body = d.get("/pipe")
    pid = int(body)
    wait_until(lambda: not pid_alive(pid), what="the request's child to die")
    assert d.get("/pipe?fail=1")[0] == 500
    pid = int(d.get("/get?k=pipe-pid")[1])
    wait_until(lambda: not pid_alive(pid), what="the failed request's child to die")


def test_worker_pids(daemon) -> None:
    d = daemon(CONF)
    wait_until(lambda: len(d.workers()) == 2)
    got = json.loads(d.get("/pids")[1])
    assert sorted(got["pids"]) == sorted(d.workers())
    assert got["me"] in got["pids"] and sorted(got["others"] + [got["me"]]) == sorted(got["pids"])


def test_wrong_contexts(daemon) -> None:
    d = daemon(CONF)
    lines = d.get("/wrong")[1].decode().splitlines()
    assert lines[0].startswith("ngx.req.set_uri: API disabled in the context of content_by_python")
    assert lines[1].startswith("ngx.arg: API disabled in the context of content_by_python")


STREAM_CONF = r"""
error_log logs/error.log info;
http {
    python_shared_dict s 1m;
    client_max_body_size 100k;
    server {
        listen 127.0.0.1:@PORT@;
        location = /stream {
            content_by_python_block {
                sizes = []
                async for chunk in ngx.req.stream():
                    sizes.append(len(chunk))
                    ngx.shared.s.set("seen", sum(sizes))
                ngx.say("total ", sum(sizes))
            }
        }
        location = /read {
            content_by_python_block {
                if ngx.var.arg_whole:
                    await ngx.req.read_body()
                    ngx.say("whole ", len(ngx.req.get_body_data()))
                else:
                    n = 0
                    async for chunk in ngx.req.stream():
                        n += len(chunk)
                    ngx.say("streamed ", n)
            }
        }
        location = /get { content_by_python_block { ngx.say(ngx.shared.s.get(ngx.var.arg_k)) } }
    }
}
"""


def test_streamed_body_arrives_before_it_ends(daemon) -> None:
    d = daemon(STREAM_CONF)
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n" + b"a" * 5000)
        # the handler sees the first piece while the rest has not been sent
        wait_until(lambda: d.get("/get?k=seen") == (200, b"5000\n"), what="the first piece")
        s.sendall(b"b" * 15000)
        data = b""
        while b"total" not in data:
            data += s.recv(4096)
        assert data.endswith(b"total 20000\n")
    assert d.get("/read", body=b"x" * 3000) == (200, b"streamed 3000\n")
    assert d.get("/read?whole=1", body=b"x" * 3000) == (200, b"whole 3000\n")
    status, _ = d.get("/stream", body=b"x" * 200_000)
    assert status == 413


def test_streamed_chunked_body(daemon) -> None:
    d = daemon(STREAM_CONF)
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3e8\r\n" + b"a" * 1000 + b"\r\n")
        wait_until(lambda: d.get("/get?k=seen") == (200, b"1000\n"), what="the first chunk")
        s.sendall(b"5\r\nbbbbb\r\n0\r\n\r\n")
        data = b""
        while b"total" not in data:
            data += s.recv(4096)
        assert data.endswith(b"total 1005\n")
