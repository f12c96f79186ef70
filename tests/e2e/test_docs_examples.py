"""The examples of docs/openresty.md run as written; no doc names a file that is not in the repository."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from support import REPO, Daemon

DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def example(doc: Path, name: str) -> str:
    """The fenced block after ``<!-- example: NAME ... -->`` in DOC."""
    text = doc.read_text()
    marker = re.search(rf"<!-- example: {re.escape(name)}\b.*?-->\n```\w*\n(.*?)\n```", text, re.S)
    assert marker is not None, f"no example {name!r} in {doc.name}"
    return marker.group(1)


def test_the_cosocket_example(daemon: Callable[..., Daemon]) -> None:
    conf = example(REPO / "docs" / "openresty.md", "cosocket")
    assert conf.count("listen 8080;") == 1
    d = daemon(conf.replace("listen 8080;", "listen 127.0.0.1:@PORT@;"))
    assert d.get("/fetch") == (200, b"200 hello from upstream, pyngx\n")
    assert d.get("/down") == (502, b"upstream failed: Connection refused\n")


# `path/to/file.ext` or [text](path) in the docs: files of the repository, or things the daemon
# makes at run time (logs, the prefix's files), or placeholders
_PATHISH = re.compile(r"`([\w.\-/]+\.(?:md|py|conf|lark|c|service|png|toml|part|json))`|\]\(([^)#\s]+)\)")
_RUNTIME = ("logs/", "/run/", "/etc/", "/usr/", "/proc/", "conf/pyngx.conf", "x.conf", "nginx.conf", "f.conf")


def _exists(name: str, doc: Path) -> bool:
    if name.startswith(("http://", "https://")):
        return True
    bases = [REPO, doc.parent, REPO / "daemon", REPO / "daemon" / "pyngx"]
    return any((base / name).exists() for base in bases) or any(
        p.name == name for p in REPO.rglob(name) if ".git" not in p.parts and ".venv" not in p.parts)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_files_of_the_repository(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for m in _PATHISH.finditer(text):
        name = m.group(1) or m.group(2)
        if name.startswith(_RUNTIME) or any(c in name for c in "*<>"):
            continue
        if not _exists(name, doc):
            missing.append(name)
    assert "DESIGN.md" not in text and "/work/" not in text
    assert not missing, f"{doc.name} names files that are not in the repository: {missing}"
