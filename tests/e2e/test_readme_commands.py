"""The README's two set-up lines work on a system whose Python refuses pip outside a venv.

Run in a fresh clone, with ``PIP_REQUIRE_VIRTUALENV=1`` standing in for Debian's and
Ubuntu's ``externally-managed-environment``: a ``pip install`` that is not inside a virtual
environment fails, as it does there. This installs from PyPI, as a user does.
"""
from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from support import REPO, free_port, wait_until

VENV = "python3 -m venv .venv && "
RUN_TESTS = " && .venv/bin/python -m pytest -q"


def readme_lines() -> list[str]:
    block = (REPO / "README.md").read_text().split("```sh\n", 1)[1].split("\n```", 1)[0]
    return block.splitlines()


def test_both_lines_use_a_venv_and_ci_runs_the_second() -> None:
    first, second = readme_lines()
    for line in (first, second):
        assert line.startswith(VENV + ".venv/bin/pip install -e "), line
        assert " pip " not in line and "python3 -m pip" not in line  # no pip of the system's Python
    assert first.endswith(" && .venv/bin/pyngx -p . -c conf/pyngx.conf -g 'daemon off;'")
    assert second.endswith(RUN_TESTS)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert second in ci, ".ci/run must run the README's second line as written"


def _clone(tmp_path: Path) -> Path:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    return clone


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_REQUIRE_VIRTUALENV": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.mark.timeout(900)
def test_the_two_lines_in_a_fresh_clone(tmp_path: Path) -> None:
    first, second = readme_lines()
    clone = _clone(tmp_path)
    env = _env()
    # the system's pip refuses, as on Debian: the lines must not depend on it
    refused = subprocess.run(["python3", "-m", "pip", "install", "--dry-run", "lark"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=120)
    said = (refused.stdout + refused.stderr).lower()
    assert refused.returncode != 0 and ("virtualenv" in said or "no module named pip" in said), said

    conf = clone / "conf" / "pyngx.conf"
    port = free_port()
    text = conf.read_text()
    assert "listen 127.0.0.1:8080;" in text  # the tour listens on loopback only
    conf.write_text(text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};"))
    with open(tmp_path / "first.log", "wb") as out:
        proc = subprocess.Popen(["bash", "-c", first], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def answers() -> bytes | None:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=2) as resp:
                    return resp.read()  # type: ignore[no-any-return]
            except OSError:
                return None
        assert wait_until(answers, 600, interval=0.2, what="the first line's daemon") == b"hello\n"
    finally:
        pid_file = clone / "logs" / "pyngx.pid"
        if proc.poll() is None and pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGQUIT)  # the master: a graceful stop
        if proc.poll() is None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert proc.returncode == 0, (tmp_path / "first.log").read_text()

    # the second line, with its test run narrowed to one file (the whole suite is this suite)
    install = second[: -len(RUN_TESTS)]
    narrowed = install + RUN_TESTS + " -p no:cacheprovider tests/unit/test_api_surface.py"
    done = subprocess.run(["bash", "-c", narrowed], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
