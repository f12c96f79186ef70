"""``pyngx -e``: ngx.say/print/flush outside a request write to stdout, as ``resty -e`` does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pyngx", "-p", str(tmp_path), "-e", code],
                          capture_output=True, timeout=30)


def test_say_and_print_go_to_stdout(tmp_path: Path) -> None:
    result = run(tmp_path, 'ngx.say("a", 1); ngx.print("b")')
    assert (result.returncode, result.stdout, result.stderr) == (0, b"a1\nb", b"")


def test_from_a_timer_and_in_order_with_print(tmp_path: Path) -> None:
    code = """
print("first")
ngx.say(b"raw ", "bytes")
def cb(premature, what):
    ngx.say("timer ", what)
    print("python print")
    ngx.print("end")
ngx.timer.at(0.01, cb, "ran")
await ngx.flush()
ngx.flush()
"""
    result = run(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"first\nraw bytes\ntimer ran\npython print\nend"


def test_ngx_exit_ends_the_code_and_its_timers_still_run(tmp_path: Path) -> None:
    # as in OpenResty's timer context: the status is ignored, the code ends there
    code = """
def cb(premature):
    ngx.say("timer")
    ngx.exit(500)
    ngx.say("not after exit in a timer")
ngx.timer.at(0.01, cb)
ngx.say("main")
ngx.exit(0)
ngx.say("not after exit")
"""
    result = run(tmp_path, code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"main\ntimer\n", b"")


def test_other_request_apis_still_refuse(tmp_path: Path) -> None:
    result = run(tmp_path, "ngx.var.uri")
    assert result.returncode == 1
    assert b"API disabled in the context of exec" in result.stderr
