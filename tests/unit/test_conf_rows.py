"""Every row of the directive table: a target in the model, a parser, a typed default that the docs show
and that reads back to the same config; a misspelt target fails at import."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyngx import conf
from pyngx.conf import directives, model, values
from pyngx.conf.directives import DIRECTIVES, TABLE, Directive
from pyngx.conf.handlers import Ctx

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "config.md"
VALUE_ROWS = [d for d in DIRECTIVES if d.to]
# rows whose value is only structure (a block) or the parser's own business
NO_TARGET = {"events", "http", "server", "location", "include"}
# documented defaults that are not one line of config giving the same model
NOT_WRITABLE = {
    "listen": "depends on the user: *:80 for root, *:8000 otherwise",
    "thread_pool": "the implicit pool has no file:line; a declared one has",
    "root": "writing it turns file serving on in every location without content",
}
# model defaults that differ from the row's on purpose: the row's needs the prefix, or is turned into the
# model's field(s) at freeze (static.freeze, conf._thread_pools)
MODEL_DIFFERS = {"pid", "error_log", "thread_pool", "alias", "disable_symlinks"}
HOME = {  # a config with one slot for a statement in each context, all on line 1
    directives.MAIN: "{} http {{ server {{ listen 127.0.0.1:8080; location / {{ }} }} }}",
    directives.EVENTS: "events {{ {} }} http {{ server {{ listen 127.0.0.1:8080; location / {{ }} }} }}",
    directives.HTTP: "http {{ {} server {{ listen 127.0.0.1:8080; location / {{ }} }} }}",
    directives.SERVER: "http {{ server {{ listen 127.0.0.1:8080; {} location / {{ }} }} }}",
    directives.LOCATION: "http {{ server {{ listen 127.0.0.1:8080; location / {{ {} }} }} }}",
}


def _model_field(target: str) -> dataclasses.Field[object]:
    cls_name, _, name = target.partition(".")
    cls = getattr(model, cls_name)
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def test_every_directive_either_stores_a_value_or_opens_a_block() -> None:
    assert {d.name for d in DIRECTIVES if not d.to} == NO_TARGET
    for d in DIRECTIVES:
        assert (d.parse is None) != (d.handler is None), d.name


@pytest.mark.parametrize("d", VALUE_ROWS, ids=lambda d: d.name)
def test_row_targets_the_model_and_agrees_with_its_defaults(d: Directive) -> None:
    for target in d.to:
        f = _model_field(target)  # StopIteration: no such field
        if d.name in MODEL_DIFFERS:
            continue
        if f.default is not dataclasses.MISSING:
            assert f.default == d.default, f"{target}: the model says {f.default!r}, the row {d.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            assert f.default_factory() == d.default, target


def test_rows_sharing_a_key_fill_one_slot() -> None:
    by_key: dict[str, set[str]] = {}
    for d in VALUE_ROWS:
        by_key.setdefault(d.key, set()).add(directives.SLOTS.get(d.name, d.name))
    assert {k: v for k, v in by_key.items() if len(v) > 1} == {}


@pytest.mark.parametrize("d", VALUE_ROWS, ids=lambda d: d.name)
def test_documented_default_reads_back_as_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     d: Directive) -> None:
    shown = d.documented_default
    text = DOCS.read_text()
    assert f"### `{d.name}`" in text
    if not shown:  # nothing documented: there is no value to write (none, no limit, an empty list)
        assert d.default in (None, (), -1, False, model.DEFAULT_TYPES), d.name
        return
    if d.parse is not None:
        assert d.parse(shown) == d.default
    assert f"default: `{shown}`" in text
    if d.name in NOT_WRITABLE:
        return
    monkeypatch.chdir(tmp_path)
    home = next(bit for bit in HOME if d.contexts & bit)
    (tmp_path / "c.conf").write_text(HOME[home].format(""))
    plain = conf.load("c.conf", str(tmp_path))
    (tmp_path / "c.conf").write_text(HOME[home].format(f"{d.name} {shown};"))
    assert conf.load("c.conf", str(tmp_path)) == plain


def test_a_misspelt_target_fails_loudly() -> None:
    bad = Directive("x", directives.MAIN, directives.TAKE1, to=("HttpConf.max_pendng_timers",), parse=values.number)
    with pytest.raises(TypeError, match="no field 'HttpConf.max_pendng_timers'"):
        directives._targets((bad,))
    with pytest.raises(TypeError, match="no field 'Nope.x'"):
        directives._targets((dataclasses.replace(bad, to=("Nope.x",)),))
    with pytest.raises(TypeError, match="a parser or a handler"):
        directives._targets((dataclasses.replace(bad, parse=None),))


def test_a_handler_cannot_read_an_unknown_directive() -> None:
    ctx = Ctx(directives.MAIN, None, None)  # type: ignore[arg-type]
    assert not ctx.has("pid")
    with pytest.raises(KeyError):
        ctx.has("pdi")


def test_code_without_a_config_reads_the_rows() -> None:
    assert directives.default("python_max_pending_timers") == model.HttpConf().max_pending_timers == 1024
    assert directives.default("worker_connections") == TABLE["worker_connections"].default
    with pytest.raises(KeyError):
        directives.default("python_max_pending_timer")
