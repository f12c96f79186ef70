"""The request API's cases of scripts/bench_http: a realistic handler, the same behind an access
phase, and large bodies; each beside the same in Lua on nginx + lua, in one run.

realistic  read query arg ``id`` and header ``X-Tenant`` through ``ngx.req.get_uri_args()`` /
           ``get_headers()``, ``incr`` a shared-dict counter per tenant, ``get`` a cached JSON
           string from a second dict, set ``ngx.header.content_type`` and two more headers,
           ``json.dumps`` a small object and ``ngx.print`` it (Lua: cjson).
access     the same behind an ``access_by_*`` token check (header ``X-Token``).
bodies     POST a 1 MiB body to a handler that reads it and answers its size, and GET a 10 MiB
           answer (``ngx.print`` of a string built at start); MiB/s each side and the ratio.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import benchlib

# -- the realistic handler --

PY_INIT = """
    init_by_python_block {
        import json
        ngx.shared.cache.set("config", json.dumps({"feature": True, "limit": 100, "region": "eu-west"}))
    }
"""

PY_HANDLER = """
            content_by_python_block {
                args = ngx.req.get_uri_args()
                headers = ngx.req.get_headers()
                tenant = headers.get("x-tenant") or "anonymous"
                hits = ngx.shared.counters.incr(tenant, 1, 0)
                config = ngx.shared.cache.get("config")
                ngx.header.content_type = "application/json"
                ngx.header["X-Tenant"] = tenant
                ngx.header["Cache-Control"] = "no-store"
                ngx.print(json.dumps({"id": args.get("id"), "tenant": tenant, "hits": hits, "config": config}))
            }
"""

PY_ACCESS = """
            access_by_python_block {
                if ngx.req.get_headers().get("x-token") != "secret":
                    ngx.exit(ngx.HTTP_FORBIDDEN)
            }
"""

PYNGX_CONF = """
worker_processes {workers};
error_log logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    python_shared_dict counters 1m;
    python_shared_dict cache 1m;
%(init)s
    server {
        listen 127.0.0.1:{port};
        location / {
%(access)s
%(handler)s
        }
    }
}
"""

LUA_INIT = """
    init_by_lua_block {
        local cjson = require "cjson"
        ngx.shared.cache:set("config", cjson.encode({feature = true, limit = 100, region = "eu-west"}))
    }
"""

LUA_HANDLER = """
            content_by_lua_block {
                local cjson = require "cjson"
                local args = ngx.req.get_uri_args()
                local headers = ngx.req.get_headers()
                local tenant = headers["x-tenant"] or "anonymous"
                local hits = ngx.shared.counters:incr(tenant, 1, 0)
                local config = ngx.shared.cache:get("config")
                ngx.header.content_type = "application/json"
                ngx.header["X-Tenant"] = tenant
                ngx.header["Cache-Control"] = "no-store"
                ngx.print(cjson.encode({id = args.id, tenant = tenant, hits = hits, config = config}))
            }
"""

LUA_ACCESS = """
            access_by_lua_block {
                if ngx.req.get_headers()["x-token"] ~= "secret" then
                    return ngx.exit(ngx.HTTP_FORBIDDEN)
                end
            }
"""

NGINX_HTTP = """
    lua_shared_dict counters 1m;
    lua_shared_dict cache 1m;
%(init)s
    server {
        listen 127.0.0.1:{port};
        location / {
%(access)s
%(handler)s
        }
    }
"""

REALISTIC_HEADERS = ["-H", "X-Tenant: acme", "-H", "X-Token: secret"]
REALISTIC_PATH = "/api/items?id=42&view=full"


def realistic_targets(kinds: list[str], workers: int, access: bool) -> list[benchlib.Target]:
    targets: list[benchlib.Target] = []
    if "pyngx" in kinds:
        conf = PYNGX_CONF % {"init": PY_INIT, "access": PY_ACCESS if access else "", "handler": PY_HANDLER}
        targets.append(benchlib.Pyngx(conf, workers))
    if "nginx" in kinds:
        http = NGINX_HTTP % {"init": LUA_INIT, "access": LUA_ACCESS if access else "", "handler": LUA_HANDLER}
        targets.append(benchlib.Nginx(http, workers))
    return targets


def realistic(args: argparse.Namespace, kinds: list[str]) -> None:
    """The realistic handler, then the same behind an access phase, beside nginx + lua."""
    for access in (False, True):
        what = "realistic handler" + (" behind an access phase" if access else "")
        for workers in args.workers:
            print(f"\n== {what}, {workers} worker(s), wrk -t1 -c{args.connections} -d{args.duration}s, "
                  f"{args.runs} alternated runs (medians) ==")
            targets = realistic_targets(kinds, workers, access)
            try:
                for t in targets:
                    t.start(REALISTIC_PATH)
                results = benchlib.alternate(
                    targets,
                    lambda t: benchlib.wrk(t.url(REALISTIC_PATH), duration=args.duration,
                                           connections=args.connections, target=t, extra=REALISTIC_HEADERS),
                    runs=args.runs,
                    warmup=lambda t: benchlib.wrk(t.url(REALISTIC_PATH), duration=1, connections=args.connections,
                                                  extra=REALISTIC_HEADERS),
                )
            finally:
                benchlib.stop_all(targets)
            _report(results, targets, f"{what}, {workers} worker" + ("s" if workers > 1 else ""))


def _report(results: dict[str, list[benchlib.Run]], targets: list[benchlib.Target], shown: str) -> None:
    labels = {t.name: t.label for t in targets}
    ratios = [(labels["pyngx"], labels["nginx+lua"])] if len(labels) == 2 else []
    benchlib.table(results, ["rps", "p99_ms", "cpu_us", "errors", "non2xx"], ratios)
    if ratios:
        mine, theirs = results[labels["pyngx"]], results[labels["nginx+lua"]]
        benchlib.record("bench_http", f"{shown}: requests/s", "req/s", benchlib.median(mine, "rps"),
                        "nginx+lua", benchlib.median(theirs, "rps"), higher_is_better=True)
        benchlib.record("bench_http", f"{shown}: CPU per request", "µs", benchlib.median(mine, "cpu_us"),
                        "nginx+lua", benchlib.median(theirs, "cpu_us"), higher_is_better=False)


# -- large bodies --

BODY_IN = 1 << 20  # bytes POSTed to /in
BODY_OUT = 10 << 20  # bytes answered by /out

PYNGX_BODIES = """
worker_processes {workers};
error_log logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_max_body_size 2m;
    init_by_python_block {
        BIG = b"x" * %(out)d
    }
    server {
        listen 127.0.0.1:{port};
        location /in {
            content_by_python_block {
                ngx.req.read_body()
                ngx.print(str(len(ngx.req.get_body_data() or b"")))
            }
        }
        location /out {
            content_by_python_block {
                ngx.print(BIG)
            }
        }
    }
}
"""

NGINX_BODIES = """
    client_max_body_size 2m;
    client_body_buffer_size 2m;
    init_by_lua_block {
        BIG = string.rep("x", %(out)d)
    }
    server {
        listen 127.0.0.1:{port};
        location /in {
            content_by_lua_block {
                ngx.req.read_body()
                local data = ngx.req.get_body_data()
                ngx.print(data and #data or 0)
            }
        }
        location /out {
            content_by_lua_block {
                ngx.print(BIG)
            }
        }
    }
"""

POST_SCRIPT = f"""
wrk.method = "POST"
wrk.body = string.rep("y", {BODY_IN})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def bodies(args: argparse.Namespace, kinds: list[str]) -> None:
    """1 MiB request bodies in, 10 MiB answers out, beside nginx + lua; MiB/s each side."""
    connections = min(args.connections, 8)
    for workers in args.workers:
        targets: list[benchlib.Target] = []
        if "pyngx" in kinds:
            targets.append(benchlib.Pyngx(PYNGX_BODIES % {"out": BODY_OUT}, workers))
        if "nginx" in kinds:
            targets.append(benchlib.Nginx(NGINX_BODIES % {"out": BODY_OUT}, workers))
        for t in targets:
            (t.prefix / "post.lua").write_text(POST_SCRIPT)
        try:
            for t in targets:
                t.start("/out")
            for path, size, what in (("/in", BODY_IN, "1 MiB request bodies in (POST)"),
                                     ("/out", BODY_OUT, "10 MiB answers out (GET)")):
                print(f"\n== {what}, {workers} worker(s), wrk -t1 -c{connections} -d{args.duration}s, "
                      f"{args.runs} alternated runs (medians) ==")
                results = benchlib.alternate(
                    targets,
                    lambda t, p=path: _body_run(t, p, args.duration, connections, size),
                    runs=args.runs,
                    warmup=lambda t, p=path: _body_run(t, p, 1, connections, size),
                )
                labels = {t.name: t.label for t in targets}
                ratios = [(labels["pyngx"], labels["nginx+lua"])] if len(labels) == 2 else []
                benchlib.table(results, ["mib_s", "rps", "p99_ms", "cpu_us", "errors", "non2xx"], ratios)
                if ratios:
                    mine, theirs = results[labels["pyngx"]], results[labels["nginx+lua"]]
                    shown = f"{what}, {workers} worker" + ("s" if workers > 1 else "")
                    benchlib.record("bench_http", f"{shown}: throughput", "MiB/s", benchlib.median(mine, "mib_s"),
                                    "nginx+lua", benchlib.median(theirs, "mib_s"), higher_is_better=True)
                    benchlib.record("bench_http", f"{shown}: CPU per request", "µs",
                                    benchlib.median(mine, "cpu_us"), "nginx+lua",
                                    benchlib.median(theirs, "cpu_us"), higher_is_better=False)
        finally:
            benchlib.stop_all(targets)


def _body_run(t: benchlib.Target, path: str, duration: float, connections: int, size: int) -> benchlib.Run:
    extra: list[str] = ["-s", str(Path(t.prefix) / "post.lua")] if path == "/in" else []
    run = benchlib.wrk(t.url(path), duration=duration, connections=connections, target=t, extra=extra)
    run.extra["mib_s"] = run.rps * size / (1 << 20)
    return run


def profile_conf(case: str) -> Any:
    """The pyngx config --profile loads for CASE (realistic, access), or None for hello world."""
    if case == "realistic":
        return PYNGX_CONF % {"init": PY_INIT, "access": "", "handler": PY_HANDLER}, REALISTIC_PATH, REALISTIC_HEADERS
    if case == "access":
        return PYNGX_CONF % {"init": PY_INIT, "access": PY_ACCESS, "handler": PY_HANDLER}, REALISTIC_PATH, \
            REALISTIC_HEADERS
    return None
