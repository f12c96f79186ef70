"""docs/api.md is generated from the docstrings and kept equal to them (scripts/api_reference)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def test_the_api_reference_is_current_and_every_public_name_has_a_docstring() -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "api_reference"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_reference_names_every_public_module() -> None:
    text = (REPO / "docs" / "api.md").read_text()
    for heading in ("ngx.worker", "ngx.config", "ngx.process", "ngx.timer", "ngx.shared", "pyngx.ipc",
                    "pyngx.events", "pyngx.pipe", "pyngx.shell", "pyngx.errors"):
        assert f"## `{heading}`" in text or f"`{heading}` and" in text, heading
    for entry in ("### `ngx.log(level: int, *args: object) -> None`", "### `await ngx.sleep(seconds: float)",
                  "### `ngx.now() -> float`", "### `ngx.time() -> int`", "### `ngx.update_time() -> None`",
                  "#### `ngx.config.prefix() -> str`", "| `ngx.ERR` | 4 |", "### `await ipc.request("):
        assert entry in text, entry
