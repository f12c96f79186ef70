"""Static files end to end: root, alias, index, try_files, validators, ranges, sendfile, hostile paths."""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from support import wait_until, raw_exchange as raw

CONF = r"""
worker_processes 1;
error_log logs/error.log info;
http {
    access_log logs/access.log;
    default_type application/octet-stream;
    types { text/plain txt; text/html html; text/css css; }
    sendfile @SENDFILE@;
    send_timeout 1s;
    server {
        listen 127.0.0.1:@PORT@;
        root html;
        location /al/ { alias html/dir/; }
        location /bad { alias html/dir/inner/; }              # nginx would let "/bad../x" out of inner/
        location ~ ^/cap(.*)$ { alias @PREFIX@/html/dir/inner/$1; }
        location /lnf/ { log_not_found off; }
        location ~ ^/rx/(.*)$ { alias @PREFIX@/html/dir/$1; }
        location /one/ { max_ranges 1; }
        location /noranges/ { max_ranges 0; }
        location /noetag/ { etag off; if_modified_since before; }
        location /locked/ { disable_symlinks on from=$document_root; }
        location /lockedall/ { alias @PREFIX@/html/locked/; disable_symlinks on; }   # every component checked
        location /tf/ { try_files $uri $uri/ /tf/fallback.txt?from=tf; }
        location /tf404/ { try_files $uri =404; }
        location /tfnamed/ { try_files $uri @app; }
        location /loop/ { try_files /nothing /loop/again; }
        location /tfmissing/ { try_files $uri @nope; }
        location @app { content_by_python_block { ngx.say("app ", ngx.var.uri, " ", ngx.var.args) } }
        location /pyfiles/ {
            try_files $uri @app;
            content_by_python_block { ngx.say("handler saw ", ngx.var.uri) }
        }
        location /types/ { types { text/x-special dat; } }
        location = /absindex/ { index missing.html /a.txt; }
        location = /hello { content_by_python_block { ngx.say("hello") } }
        location = /vars {
            content_by_python_block { ngx.say(ngx.var.document_root, " ", ngx.var.request_filename) }
        }
        location /alvars/ {
            alias html/dir/;
            content_by_python_block { ngx.say(ngx.var.document_root, " ", ngx.var.request_filename) }
        }
    }
}
"""

A_TXT = b"hello world, this is a file\n"


def make_tree(prefix: Path) -> None:
    html = prefix / "html"
    for sub in ("dir", "empty", "tf", "one", "noranges", "noetag", "lnf", "types", "locked/real", "pyfiles",
                "absindex"):
        (html / sub).mkdir(parents=True, exist_ok=True)
    (html / "a.txt").write_bytes(A_TXT)
    (html / "index.html").write_bytes(b"<p>root index</p>\n")
    (html / "dir" / "index.html").write_bytes(b"<p>dir index</p>\n")
    (html / "dir" / "page.txt").write_bytes(b"page\n")
    (html / "dir" / "inner").mkdir()
    (html / "dir" / "inner" / "in.txt").write_bytes(b"in\n")
    (html / "dir" / "aliassecret.txt").write_bytes(b"secret\n")
    (html / "tf" / "fallback.txt").write_bytes(b"fallback\n")
    (html / "tf" / "here.txt").write_bytes(b"here\n")
    (html / "one" / "f.txt").write_bytes(A_TXT)
    (html / "noranges" / "f.txt").write_bytes(A_TXT)
    (html / "noetag" / "f.txt").write_bytes(A_TXT)
    (html / "types" / "x.dat").write_bytes(b"dat\n")
    (html / "types" / "x.txt").write_bytes(b"txt\n")
    (html / "pyfiles" / "real.txt").write_bytes(b"real\n")
    (html / "UPPER.TXT").write_bytes(b"upper\n")
    (html / "noext").write_bytes(b"noext\n")
    (html / b"caf\xff.txt".decode("utf-8", "surrogateescape")).write_bytes(b"latin\n")
    (html / "big.bin").write_bytes(os.urandom(12 << 20))  # more than the socket buffers hold
    (prefix / "secret.txt").write_bytes(b"secret\n")
    (html / "locked" / "real" / "f.txt").write_bytes(b"locked\n")
    os.symlink(prefix / "secret.txt", html / "out.txt")                 # a link out of the root
    os.symlink(prefix / "secret.txt", html / "locked" / "out.txt")
    os.symlink(html / "locked" / "real", html / "locked" / "viadir")     # a link in the middle of a path
    os.mkfifo(html / "fifo")


@pytest.fixture(params=["on", "off"])
def served(request: Any, daemon: Any) -> Any:
    d = daemon(CONF.replace("@SENDFILE@", request.param), start=False)
    make_tree(d.prefix)
    d.start()
    d.expect_errors = True  # 404s and 403s are logged, as nginx; tests check the lines they expect
    return d


def get(port: int, target: bytes, extra: bytes = b"", method: bytes = b"GET") -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, the target sent byte for byte."""
    out = raw(port, method + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + b"\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def test_file_headers_head_and_types(served: Any) -> None:
    d = served
    path = d.prefix / "html" / "a.txt"
    st = path.stat()
    status, h, body = get(d.port, b"/a.txt")
    assert (status, body) == (200, A_TXT)
    assert h["content-type"] == "text/plain" and h["content-length"] == str(len(A_TXT))
    assert h["etag"] == f'"{int(st.st_mtime):x}-{st.st_size:x}"'
    assert h["last-modified"] == formatdate(int(st.st_mtime), usegmt=True)
    assert h["accept-ranges"] == "bytes"
    status, h2, body = get(d.port, b"/a.txt", method=b"HEAD")
    assert (status, body, h2["content-length"], h2["etag"]) == (200, b"", str(len(A_TXT)), h["etag"])
    assert get(d.port, b"/UPPER.TXT")[1]["content-type"] == "text/plain"  # extensions match in any case
    assert get(d.port, b"/noext")[1]["content-type"] == "application/octet-stream"  # default_type
    assert get(d.port, b"/types/x.dat")[1]["content-type"] == "text/x-special"  # a location's own types
    assert get(d.port, b"/types/x.txt")[1]["content-type"] == "application/octet-stream"  # ... replace all
    assert get(d.port, b"/caf%FF.txt")[2] == b"latin\n"  # a name that is not UTF-8
    assert get(d.port, b"/hello")[2] == b"hello\n"  # content locations are untouched
    html = d.prefix / "html"
    assert get(d.port, b"/vars")[2] == f"{html} {html}/vars\n".encode()  # $document_root, $request_filename
    assert get(d.port, b"/alvars/x.txt")[2] == f"{html}/dir/ {html}/dir/x.txt\n".encode()


def test_conditional_requests(served: Any) -> None:
    d = served
    _, h, _ = get(d.port, b"/a.txt")
    etag, lm = h["etag"].encode(), h["last-modified"].encode()
    status, h304, body = get(d.port, b"/a.txt", b"If-None-Match: " + etag + b"\r\n")
    assert (status, body) == (304, b"") and h304["etag"] == etag.decode() and "content-type" not in h304
    assert "content-length" not in h304
    assert get(d.port, b"/a.txt", b'If-None-Match: "x", W/' + etag + b"\r\n")[0] == 304  # weak, in a list
    assert get(d.port, b"/a.txt", b"If-None-Match: *\r\n")[0] == 304
    assert get(d.port, b"/a.txt", b'If-None-Match: "other"\r\n')[0] == 200
    assert get(d.port, b"/a.txt", b"If-Modified-Since: " + lm + b"\r\n")[0] == 304
    older = formatdate(time.time() - 86400 * 400, usegmt=True).encode()
    newer = formatdate(time.time() + 86400, usegmt=True).encode()
    assert get(d.port, b"/a.txt", b"If-Modified-Since: " + older + b"\r\n")[0] == 200
    assert get(d.port, b"/a.txt", b"If-Modified-Since: " + newer + b"\r\n")[0] == 200  # exact: only equal
    assert get(d.port, b"/a.txt", b"If-Modified-Since: garbage\r\n")[0] == 200
    # both given: both must hold (nginx)
    assert get(d.port, b"/a.txt", b"If-Modified-Since: " + lm + b'\r\nIf-None-Match: "no"\r\n')[0] == 200
    assert get(d.port, b"/a.txt", b'If-Match: "no"\r\n')[0] == 412
    assert get(d.port, b"/a.txt", b"If-Match: " + etag + b"\r\n")[0] == 200
    assert get(d.port, b"/a.txt", b"If-Unmodified-Since: " + older + b"\r\n")[0] == 412
    # etag off; if_modified_since before
    status, h, _ = get(d.port, b"/noetag/f.txt")
    assert status == 200 and "etag" not in h
    assert get(d.port, b"/noetag/f.txt", b"If-None-Match: *\r\n")[0] == 200  # no ETag: nothing matches
    assert get(d.port, b"/noetag/f.txt", b"If-Modified-Since: " + newer + b"\r\n")[0] == 304


def test_ranges(served: Any) -> None:
    d = served
    size = len(A_TXT)
    status, h, body = get(d.port, b"/a.txt", b"Range: bytes=0-4\r\n")
    assert (status, body, h["content-range"]) == (206, A_TXT[:5], f"bytes 0-4/{size}")
    assert get(d.port, b"/a.txt", b"Range: bytes=-5\r\n")[2] == A_TXT[-5:]
    assert get(d.port, b"/a.txt", b"Range: bytes=20-\r\n")[2] == A_TXT[20:]
    assert get(d.port, b"/a.txt", b"Range: bytes=20-9999\r\n")[2] == A_TXT[20:]
    status, h, body = get(d.port, b"/a.txt", b"Range: bytes=0-3,6-8\r\n")
    assert status == 206 and h["content-type"].startswith("multipart/byteranges; boundary=")
    boundary = h["content-type"].split("=", 1)[1]
    assert body == (f"\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-3/{size}\r\n\r\nhell"
                    f"\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 6-8/{size}\r\n\r\nwor"
                    f"\r\n--{boundary}--\r\n").encode()
    assert int(h["content-length"]) == len(body)
    line = f'"GET /a.txt HTTP/1.1" 206 {len(body)} '  # $body_bytes_sent counts the multipart framing
    assert wait_until(lambda: line in (d.prefix / "logs" / "access.log").read_text(), 5, what="the access log")
    status, h, _ = get(d.port, b"/a.txt", b"Range: bytes=200-\r\n")
    assert (status, h["content-range"]) == (416, f"bytes */{size}")
    assert get(d.port, b"/a.txt", b"Range: bytes=x-y\r\n")[0] == 416
    assert get(d.port, b"/a.txt", b"Range: lines=1-2\r\n")[0] == 200  # not bytes: ignored
    assert get(d.port, b"/a.txt", b"Range: bytes=0-5,3-9,0-27\r\n")[0] == 200  # more than the file: whole
    status, h, body = get(d.port, b"/a.txt", b"Range: bytes=2-3\r\n", method=b"HEAD")
    assert (status, body, h["content-length"]) == (206, b"", "2")
    _, h, _ = get(d.port, b"/a.txt")
    assert get(d.port, b"/a.txt", b"Range: bytes=0-1\r\nIf-Range: " + h["etag"].encode() + b"\r\n")[0] == 206
    assert get(d.port, b"/a.txt", b'Range: bytes=0-1\r\nIf-Range: "old"\r\n')[0] == 200
    lm = h["last-modified"].encode()
    assert get(d.port, b"/a.txt", b"Range: bytes=0-1\r\nIf-Range: " + lm + b"\r\n")[0] == 206
    assert get(d.port, b"/a.txt", b"Range: bytes=0-1\r\nIf-Range: Mon, 01 Jan 2001 00:00:00 GMT\r\n")[0] == 200
    http10 = raw(d.port, b"GET /a.txt HTTP/1.0\r\n\r\n")  # no Host needed, closed after the body
    assert http10.startswith(b"HTTP/1.1 200 OK\r\n") and http10.endswith(b"\r\n\r\n" + A_TXT)
    assert get(d.port, b"/one/f.txt", b"Range: bytes=0-1\r\n")[0] == 206
    assert get(d.port, b"/one/f.txt", b"Range: bytes=0-1,4-5\r\n")[0] == 200  # over max_ranges: whole
    status, h, _ = get(d.port, b"/noranges/f.txt", b"Range: bytes=0-1\r\n")
    assert status == 200 and "accept-ranges" not in h


def test_big_file_to_a_slow_reader_then_pipelined(served: Any) -> None:
    """The socket fills: the rest goes out as the client reads; the next pipelined answers wait their turn."""
    d = served
    data = (d.prefix / "html" / "big.bin").read_bytes()
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000-1999999\r\n\r\n"
                  b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)  # read nothing for a moment: the server meets a full socket
        out = bytearray()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            out += chunk
    first = bytes(out).split(b"\r\n\r\n", 1)[1]
    assert hashlib.md5(first[:len(data)]).digest() == hashlib.md5(data).digest()
    rest = first[len(data):]
    second = rest.split(b"\r\n\r\n", 1)[1]
    assert rest.startswith(b"HTTP/1.1 206") and second[:1999000] == data[1000:2000000]
    assert second[1999000:].startswith(b"HTTP/1.1 200 OK") and second.endswith(b"\r\n\r\nhello\n")


def test_client_gone_mid_file_keeps_the_worker(served: Any) -> None:
    d = served
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    assert wait_until(lambda: get(d.port, b"/a.txt")[2] == A_TXT, 10)
    assert "[crit]" not in d.error_log() and "[alert]" not in d.error_log()


def test_send_timeout_ends_a_client_that_does_not_read(served: Any) -> None:
    d = served
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        d.wait_log('client timed out (110: Connection timed out) while sending response to client')
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
    assert got < 12 << 20  # cut short
    assert get(d.port, b"/a.txt")[2] == A_TXT
    line = f'"GET /a.txt HTTP/1.1" 200 {len(A_TXT)} '
    assert wait_until(lambda: line in (d.prefix / "logs" / "access.log").read_text(), 5, what="the access log")


def test_directories_index_and_errors(served: Any) -> None:
    d = served
    status, h, _ = get(d.port, b"/dir?x=1")
    assert status == 301 and h["location"] == f"http://t:{d.port}/dir/?x=1"
    assert get(d.port, b"/dir/")[2] == b"<p>dir index</p>\n"
    assert get(d.port, b"/")[2] == b"<p>root index</p>\n"
    assert get(d.port, b"/absindex/")[2] == A_TXT  # the last index may be an absolute URI
    assert get(d.port, b"/empty/")[0] == 403
    d.wait_log(f'directory index of "{d.prefix}/html/empty/" is forbidden')
    assert get(d.port, b"/nodir/")[0] == 404
    assert get(d.port, b"/missing.txt")[0] == 404
    d.wait_log(f'open() "{d.prefix}/html/missing.txt" failed (2: No such file or directory)')
    assert get(d.port, b"/lnf/missing.txt")[0] == 404
    assert get(d.port, b"/fifo")[0] == 404  # opened without blocking, refused: not a regular file
    d.wait_log(f'"{d.prefix}/html/fifo" is not a regular file')
    assert get(d.port, b"/" + b"n" * 300)[0] == 404  # ENAMETOOLONG
    assert get(d.port, b"/a.txt", method=b"PUT")[0] == 405
    assert get(d.port, b"/a.txt", method=b"POST")[0] == 405
    assert get(d.port, b"/missing.txt", method=b"POST")[0] == 404
    assert "lnf/missing.txt" not in d.error_log()  # log_not_found off
    assert get(d.port, b"/al/page.txt")[2] == b"page\n"
    assert get(d.port, b"/al/")[2] == b"<p>dir index</p>\n"
    assert get(d.port, b"/rx/page.txt")[2] == b"page\n"
    assert get(d.port, b"/bad/in.txt")[2] == b"in\n"
    assert get(d.port, b"/cap/in.txt")[2] == b"in\n"


def test_try_files(served: Any) -> None:
    d = served
    assert get(d.port, b"/tf/here.txt")[2] == b"here\n"
    assert get(d.port, b"/tf/nothing")[2] == b"fallback\n"
    assert get(d.port, b"/tf404/nothing")[0] == 404
    assert get(d.port, b"/tfnamed/nothing?q=1")[2] == b"app /tfnamed/nothing q=1\n"
    assert get(d.port, b"/pyfiles/real.txt")[2] == b"handler saw /pyfiles/real.txt\n"  # found: the handler runs
    assert get(d.port, b"/pyfiles/none.txt")[2] == b"app /pyfiles/none.txt None\n"
    assert get(d.port, b"/loop/x")[0] == 500
    d.wait_log('rewrite or internal redirection cycle while internally redirecting to "/loop/again"')
    assert get(d.port, b"/tfmissing/x")[0] == 500
    d.wait_log('[crit]')
    d.wait_log('could not find named location "@nope"')
    assert get(d.port, b"/tf/here.txt?x=1")[2] == b"here\n"  # and the worker goes on


HOSTILE = [
    b"/../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/%2e%2e/etc/passwd", b"/dir/../../secret.txt",
    b"/dir/%2e%2e/%2e%2e/secret.txt", b"/..%2fsecret.txt", b"/dir%2f..%2f..%2fsecret.txt",
    b"/%2e%2e%2fsecret.txt", b"/a.txt%00.html", b"/..\\secret.txt", b"/al/../../secret.txt",
    b"/al/..%2f..%2fsecret.txt", b"/al../secret.txt", b"/rx/..%2f..%2f..%2fsecret.txt", b"//../secret.txt",
    b"/./../secret.txt", b"/dir/./../../secret.txt", b"/%252e%252e/secret.txt", b"http://t/../secret.txt",
    b"/bad../aliassecret.txt", b"/bad%2e%2e/aliassecret.txt", b"/cap../aliassecret.txt",
]


def test_hostile_paths_never_leave_the_root(served: Any) -> None:
    d = served
    for target in HOSTILE:
        status, _, body = get(d.port, target)
        assert b"secret" not in body, target
        assert status in (400, 403, 404), (target, status)
    d.wait_log('the path of "/bad../aliassecret.txt" leaves the root or alias, refused')
    # symlinks: followed by default (nginx), refused under disable_symlinks on in any component:
    # the last one is 403 (ELOOP), one in the middle 404 (ENOTDIR), as nginx 1.22 answers
    assert get(d.port, b"/out.txt")[2] == b"secret\n"
    assert get(d.port, b"/locked/real/f.txt")[2] == b"locked\n"
    assert get(d.port, b"/locked/out.txt")[0] == 403
    assert get(d.port, b"/locked/viadir/f.txt")[0] == 404
    assert get(d.port, b"/lockedall/real/f.txt")[2] == b"locked\n"
    assert get(d.port, b"/lockedall/viadir/f.txt")[0] == 404
    d.wait_log("openat() \"" + str(d.prefix) + "/html/locked/out.txt\" failed (40: Too many levels of symbolic links)")
    d.wait_log("/html/locked/viadir/f.txt\" failed (20: Not a directory)")
    assert get(d.port, b"/a.txt")[2] == A_TXT  # and the worker still serves


def test_reload_changes_the_root_and_quit_lets_a_big_file_finish(daemon: Any) -> None:
    conf = CONF.replace("@SENDFILE@", "on").replace("send_timeout 1s;", "send_timeout 10s;")
    d = daemon(conf, start=False)
    make_tree(d.prefix)
    (d.prefix / "html2").mkdir()
    (d.prefix / "html2" / "a.txt").write_bytes(b"new root\n")
    d.start()
    d.expect_errors = True
    assert get(d.port, b"/a.txt")[2] == A_TXT
    d.write_conf(conf.replace("root html;", "root html2;"))
    d.signal(signal.SIGHUP)
    wait_until(lambda: get(d.port, b"/a.txt")[2] == b"new root\n", 15, what="the new root")
    # graceful stop while a slow client still reads a big file: the answer is finished first
    data = (d.prefix / "html" / "big.bin").read_bytes()
    d.write_conf(conf)
    d.signal(signal.SIGHUP)
    wait_until(lambda: get(d.port, b"/a.txt")[2] == A_TXT, 15, what="the old root again")
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        first = s.recv(65536)
        d.signal(signal.SIGQUIT)
        time.sleep(0.5)  # the worker is exiting gracefully while the socket is full
        out = bytearray(first)
        while chunk := s.recv(1 << 20):
            out += chunk
    body = bytes(out).split(b"\r\n\r\n", 1)[1]
    assert hashlib.md5(body).digest() == hashlib.md5(data).digest()
    assert d.proc is not None
    assert d.proc.wait(timeout=30) == 0


PHASED_FILES = r"""
worker_processes 1;
error_log logs/error.log info;
http {
    python_shared_dict counts 64k;
    server {
        listen 127.0.0.1:@PORT@;
        root html;
        location /private/ {
            access_by_python_block {
                if ngx.var.arg_token != "letmein":
                    ngx.exit(ngx.HTTP_FORBIDDEN)
            }
            log_by_python_block { ngx.shared.counts.incr(str(ngx.status), 1, init=0) }
        }
        location = /counts {
            content_by_python_block {
                ngx.say(ngx.shared.counts.get("200"), " ", ngx.shared.counts.get("403"))
            }
        }
    }
}
"""


def test_files_are_served_after_the_access_phase_and_logged_by_the_log_phase(daemon: Any) -> None:
    d = daemon(PHASED_FILES, start=False)
    (d.prefix / "html" / "private").mkdir(parents=True)
    (d.prefix / "html" / "private" / "a.txt").write_bytes(b"secret file\n")
    d.start()
    assert d.get("/private/a.txt")[0] == 403
    assert d.get("/private/a.txt?token=letmein") == (200, b"secret file\n")
    assert d.get("/private/a.txt?token=letmein") == (200, b"secret file\n")
    assert d.get("/private/missing.txt?token=letmein")[0] == 404
    d.expect_errors = True  # the 404 is logged at [error], as nginx's open() failed
    assert wait_until(lambda: d.get("/counts") == (200, b"2 1\n"), 5, what="the log phase's counts")
