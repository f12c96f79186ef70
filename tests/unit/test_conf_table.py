"""The directive table: one row per directive of the public contract, docs generated from it, checks in one place."""
from __future__ import annotations

from pathlib import Path

import pytest

from pyngx import conf
from pyngx.conf import directives
from pyngx.conf.directives import TABLE

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "config.md"
DESIGN_DIRECTIVES = """worker_processes master_process daemon pid error_log user worker_shutdown_timeout events
worker_connections include http python_path python_shared_dict python_max_pending_timers python_max_running_timers
init_by_python_block init_by_python_file init_worker_by_python_block init_worker_by_python_file access_log
default_type keepalive_timeout client_header_timeout client_body_timeout send_timeout client_max_body_size server
listen server_name location set return content_by_python_block content_by_python_file pyngx_status""".split()
DESIGN_DIRECTIVES += ["thread_pool", "worker_stall_warn", "worker_stall_timeout"]  # threads and the watchdog
DESIGN_DIRECTIVES += ["python_cluster", "python_cluster_retention"]  # the cluster (second round)
DESIGN_DIRECTIVES += """root alias index try_files sendfile etag if_modified_since max_ranges disable_symlinks
log_not_found types""".split()  # static files
# the request phases of the second round (the contract's "Phases")
DESIGN_DIRECTIVES += [f"{p}_by_python_{form}" for p in ("rewrite", "access", "header_filter", "body_filter", "log",
                                                          "exit_worker") for form in ("block", "file")]


def test_every_design_directive_has_one_row() -> None:
    assert set(DESIGN_DIRECTIVES) <= set(TABLE)  # and the ones added since (worker_max_requests, ...)
    assert len(directives.DIRECTIVES) == len(TABLE)
    assert all(d.doc and d.syntax is not None for d in directives.DIRECTIVES)


def test_docs_match_the_table() -> None:
    text = DOCS.read_text()
    assert directives.reference() in text, "run: python3 -c 'from pyngx.conf import directives; directives.update_doc(\"docs/config.md\")'"


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.chdir(tmp_path)

    def go(text: str) -> str:
        (tmp_path / "c.conf").write_text(text)
        try:
            conf.load("c.conf", str(tmp_path))
        except conf.ConfError as exc:
            return str(exc)
        return ""
    return go


WRAP = {  # a statement placed in each context
    "main": "{}",
    "events": "events {{ {} }}",
    "http": "http {{ {} }}",
    "server": "http {{ server {{ {} }} }}",
    "location": "http {{ server {{ location / {{ {} }} }} }}",
}


@pytest.mark.parametrize("name", sorted(set(TABLE) - {"include"}))
def test_wrong_context_and_argument_count(load: object, name: str) -> None:
    """Every directive: refused where it does not belong; a wrong argument count is named."""
    d = TABLE[name]
    ending = " { }" if d.kind != directives.SIMPLE else ";"
    for context, template in WRAP.items():
        bit = {"main": directives.MAIN, "events": directives.EVENTS, "http": directives.HTTP,
               "server": directives.SERVER, "location": directives.LOCATION}[context]
        if d.contexts & bit:
            continue
        assert load(template.format(name + " a" * _good_count(d) + ending)) == \
            f'"{name}" directive is not allowed here in c.conf:1'  # type: ignore[operator]
    home = next(t for c, t in WRAP.items() if d.contexts & {"main": 1, "events": 2, "http": 4, "server": 8,
                                                             "location": 16}[c])
    bad = _bad_count(d)
    if bad is not None:
        assert load(home.format(name + " a" * bad + ending)) == \
            f'invalid number of arguments in "{name}" directive in c.conf:1'  # type: ignore[operator]


def _good_count(d: directives.Directive) -> int:
    return next(n for n in range(5) if directives._arity_ok(d, n))


def _bad_count(d: directives.Directive) -> int | None:
    return next((n for n in range(5) if not directives._arity_ok(d, n)), None)


@pytest.mark.parametrize("name", [n for n, d in TABLE.items() if d.kind == directives.SIMPLE and n != "include"])
def test_simple_directive_with_a_block(load: object, name: str) -> None:
    d = TABLE[name]
    home = next(t for c, t in WRAP.items() if d.contexts & {"main": 1, "events": 2, "http": 4, "server": 8,
                                                             "location": 16}[c])
    assert load(home.format(name + " a" * _good_count(d) + " { }")) == \
        f'directive "{name}" is not terminated by ";" in c.conf:1'  # type: ignore[operator]
