"""Large bodies in-process: 10 MiB answers out and 1 MiB request bodies in, whole and correct,
and copied in Python at most once (measured with tracemalloc around the request)."""
from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator

import pytest
from support import raw_exchange
from test_http_server import Served, loc

from pyngx.runtime import core

OUT = 10 << 20
IN = 1 << 20
BIG = bytes(range(256)) * (OUT // 256)

LOCATIONS = (
    loc("=", "/out", "ngx.print(BIG)"),
    loc("=", "/pieces", "ngx.print(BIG[:OUT // 2])\nngx.print(BIG[OUT // 2:])"),
    loc("=", "/flushed", "ngx.print(BIG)\nawait ngx.flush()\nngx.print(BIG[:1000])"),
    loc("=", "/in", 'ngx.req.read_body()\ndata = ngx.req.get_body_data()\n'
                    'ngx.say(len(data), " ", data[:4] == b"\\x00\\x01\\x02\\x03", " ", data[-1])',
        client_max_body_size=2 * IN),
)


@pytest.fixture(params=["uvloop", "asyncio"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    s = Served(LOCATIONS, request.param)
    core.RT.globals.update(BIG=BIG, OUT=OUT)
    try:
        yield s
    finally:
        s.close()


def fetch(served: Served, request: bytes) -> tuple[bytes, int, int]:
    """Send REQUEST; (the head, body bytes received, a checksum of them), read in small pieces
    and dropped, so the client keeps no copy of the body."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = s.recv(65536)
            assert piece, "closed before the head"
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])}
        length = int(hdrs[b"content-length"]) if b"content-length" in hdrs else None
        received, total = len(rest), sum(rest)
        while length is None or received < length:
            piece = s.recv(65536)
            if not piece:
                break
            received += len(piece)
            total += sum(piece[::4096])  # a cheap fingerprint, not a copy
        return head, received, total


def traced(fn: object, *args: object) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = fn(*args)  # type: ignore[operator]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_10_mib_answer_goes_out_whole_and_uncopied(served: Served, request: pytest.FixtureRequest) -> None:
    (head, received, _), peak = traced(fetch, served, b"GET /out HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: %d" % OUT in head
    assert received == OUT
    if "uvloop" in request.node.name:
        assert peak < OUT // 4, peak  # no copy at all: the transport sends the bytes object itself
    else:
        assert peak < OUT * 3 // 2, peak  # at most asyncio's own buffer of what the socket did not take


def test_the_answer_is_the_bytes_printed(served: Served) -> None:
    data = raw_exchange(served.port, b"GET /pieces HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /out HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", shut=False)
    for _ in range(2):
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % OUT in head
        assert rest[:OUT] == BIG
        data = rest[OUT:]
    assert not data


def test_a_flushed_large_piece_is_chunked_whole(served: Served) -> None:
    data = raw_exchange(served.port, b"GET /flushed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", shut=False)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert rest == b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (OUT, BIG, 1000, BIG[:1000])


def test_a_1_mib_request_body_is_read_whole_and_joined_once(served: Served) -> None:
    body = BIG[:IN]
    request = b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (IN, body)
    (head, received, _), peak = traced(fetch, served, request)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    # the pieces the parser hands over, then one join: twice the body at most, never three times
    assert peak < IN * 5 // 2, peak
    status, _, answer = served.get("/in", "POST", body=body)
    assert (status, answer) == (200, b"%d True 255\n" % IN)
