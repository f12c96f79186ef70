"""The short version of each step of scripts/soak: a real server per step, on loopback, bounded."""
from __future__ import annotations

import subprocess
import sys

import pytest

from support import REPO

STEPS = ["kill", "hup", "hostile", "configs", "ulimit", "master"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("step", STEPS)
def test_soak_step_quick(step: str) -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "soak"), "--quick", "--step", step],
                            capture_output=True, text=True, timeout=170, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| step | sent | failed |" in result.stdout and "passed in" in result.stdout
