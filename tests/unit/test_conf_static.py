"""What StaticConf each location gets: nginx's inheritance of root, index, types; alias and try_files stay put."""
from __future__ import annotations

from pathlib import Path

from pyngx import conf

TEXT = """
http {
    root /srv/http;
    index a.html;
    sendfile on;
    types { text/x-a a; }
    server {
        listen 8080;
        index b.html;
        try_files $uri =404;
        location /plain/ { }
        location /own/ { root /srv/own/; types { text/x-b b; } etag off; }
        location /al/ { alias /srv/al/; }
        location ~ ^/rx/(.*)$ { alias /srv/rx/$1; }
        location /tf/ { try_files $uri @app; max_ranges 2; }
        location @app { content_by_python_block { ngx.say(1) } }
        location = /py { content_by_python_block { ngx.say(2) } }
    }
    server {
        listen 8081;
        root rel;
        location = /none { return 204; }
    }
    server {
        listen 8082;
        location / { content_by_python_block { ngx.say(3) } }
    }
}
"""


def test_inheritance(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text(TEXT)
    http = conf.load("c.conf", str(tmp_path)).http
    assert http is not None
    first, second, third = http.servers
    locs = {loc.pattern: loc.static for loc in first.locations}
    plain = locs["/plain/"]
    assert plain is not None and plain.root == "/srv/http" and plain.index == ("b.html",) and plain.sendfile
    assert plain.types == {"a": "text/x-a"} and plain.try_files == ()  # try_files is not inherited
    own = locs["/own/"]
    assert own is not None and own.root == "/srv/own" and own.types == {"b": "text/x-b"} and not own.etag
    al = locs["/al/"]
    assert al is not None and al.alias and al.root == "/srv/al/" and al.prefix == "/al/"
    rx = locs["^/rx/(.*)$"]
    assert rx is not None and rx.alias and rx.root == "/srv/rx/$1" and rx.prefix == ""
    tf = locs["/tf/"]
    assert tf is not None and tf.try_files == ("$uri", "@app") and tf.max_ranges == 2
    assert first.fallback is not None and first.fallback.static is not None
    assert first.fallback.static.try_files == ("$uri", "=404")  # the server's own, for unmatched URIs
    assert second.fallback is not None and second.fallback.static.root == str(tmp_path / "rel")
    assert third.fallback is not None and third.fallback.static.root == "/srv/http"  # from http
    assert third.locations[0].static is not None  # a content location keeps it ($document_root)


def test_no_root_no_files(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text("http { server { listen 8080; location / { } } }")
    http = conf.load("c.conf", str(tmp_path)).http
    assert http is not None
    assert http.servers[0].fallback is None and http.servers[0].locations[0].static is None
