"""The config corpus: tests/conf/valid/*.conf load, tests/conf/invalid/*.conf fail as their first line says."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from pyngx import conf
from pyngx.conf import parse
from pyngx.conf.model import HANDLER_NAME, Chunk

CORPUS = Path(__file__).resolve().parent.parent / "conf"
VALID = sorted((CORPUS / "valid").glob("*.conf"))
INVALID = sorted((CORPUS / "invalid").glob("*.conf"))
EXPECT = "# expect: "


@pytest.fixture
def in_dir(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run from a corpus directory, so messages name files as "x.conf" (relative to the cwd)."""
    def go(path: Path) -> str:
        monkeypatch.chdir(path.parent)
        return path.name
    return go


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_config_loads(path: Path, in_dir: Any) -> None:
    name = in_dir(path)
    config = conf.load(name, str(path.parent))
    assert config.file == str(path)
    assert config.files[0] == str(path)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_fails_with_its_message(path: Path, in_dir: Any) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith(EXPECT), f"{path.name}: the first line must be '{EXPECT}MESSAGE'"
    name = in_dir(path)
    with pytest.raises(conf.ConfError) as info:
        conf.load(name, str(path.parent))
    assert str(info.value) == first[len(EXPECT):]


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: p.parent.name + "/" + p.stem)
def test_every_statement_names_a_line_of_its_file(path: Path) -> None:
    """Where the text parses, each statement's line holds its name (and a Python block's, its "{")."""
    text = path.read_text()
    lines = text.splitlines()
    try:
        stmts = parse.parse_text(text, "f.conf", "/f.conf")
    except conf.ConfError as exc:
        assert 1 <= exc.line <= len(lines) + 1
        return
    todo = list(stmts)
    while todo:
        st = todo.pop()
        assert st.name in lines[st.line - 1]
        if st.code is not None:
            assert "{" in lines[st.code_line - 1]
        todo.extend(st.block or ())


class FakeNgx:
    """Just enough of the ngx API for the corpus handlers."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def say(self, *args: Any) -> None:
        self.out.append("".join(map(str, args)))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def run_handler(chunk: Chunk, namespace: dict[str, Any]) -> None:
    exec(chunk.code, namespace)
    result = namespace[HANDLER_NAME]()
    if chunk.is_async:
        asyncio.run(result)


def test_python_blocks_run_as_written(in_dir: Any) -> None:
    path = CORPUS / "valid" / "python_braces.conf"
    config = conf.load(in_dir(path), str(path.parent))
    assert config.http is not None and config.http.init is not None
    ngx = FakeNgx()
    namespace: dict[str, Any] = {"ngx": ngx}
    exec(config.http.init.code, namespace)
    locations = config.http.servers[0].locations
    assert len(locations) == 14
    for loc in locations:
        assert loc.content is not None
        ngx.out.clear()
        run_handler(loc.content, dict(namespace))
        assert ngx.out == [loc.sets[0].value], loc.pattern
    assert [loc.pattern for loc in locations if loc.content and loc.content.is_async] == ["/await"]


def test_corpus_is_not_empty() -> None:
    assert len(VALID) >= 3 and len(INVALID) >= 30
    assert os.path.isdir(CORPUS / "valid" / "include")
