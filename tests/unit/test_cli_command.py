"""The pyngx command run as a subprocess: -t, -T, -q, -v, -V, -g, -p, -c, exit codes, no tracebacks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OK_CONF = """worker_processes 1;
error_log logs/error.log info;
http {
    include extra/*.conf;
    server {
        listen 127.0.0.1:8080;
        location / {
            content_by_python_block {
                ngx.say({"a": "}"}["a"])
            }
        }
    }
}
"""


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    (tmp_path / "conf" / "extra").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / "conf" / "pyngx.conf").write_text(OK_CONF)
    (tmp_path / "conf" / "extra" / "dicts.conf").write_text("python_shared_dict d 64k;\n")
    return tmp_path


def pyngx(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "pyngx", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def test_test_succeeds(prefix: Path) -> None:
    proc = pyngx(prefix, "-t")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == ("pyngx: the configuration file conf/pyngx.conf syntax is ok\n"
                           "pyngx: configuration file conf/pyngx.conf test is successful\n")
    quiet = pyngx(prefix, "-tq")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_test_fails_with_file_and_line(prefix: Path) -> None:
    (prefix / "conf" / "pyngx.conf").write_text(OK_CONF.replace("    server {", "    foo bar;\n    server {"))
    proc = pyngx(prefix, "-t", "-q")
    assert proc.returncode == 1
    assert proc.stderr == ('pyngx: [emerg] unknown directive "foo" in conf/pyngx.conf:5\n'
                           "pyngx: configuration file conf/pyngx.conf test failed\n")


def test_python_syntax_error_names_the_config_line(prefix: Path) -> None:
    (prefix / "conf" / "pyngx.conf").write_text(OK_CONF.replace('["a"])', '["a"]) +'))
    proc = pyngx(prefix, "-t")
    assert proc.returncode == 1
    assert proc.stderr.startswith("pyngx: [emerg] SyntaxError: invalid syntax in conf/pyngx.conf:9\n")


def test_test_runs_init_by_python(prefix: Path) -> None:
    (prefix / "conf" / "pyngx.conf").write_text('http {\n init_by_python_block {\n  raise RuntimeError("no")\n }\n}\n')
    proc = pyngx(prefix, "-t")
    assert proc.returncode == 1
    assert "[emerg]" in proc.stderr and "RuntimeError: no" in proc.stderr and "test failed" in proc.stderr


def test_dump_prints_every_file(prefix: Path) -> None:
    proc = pyngx(prefix, "-T", "-q")
    assert proc.returncode == 0
    assert proc.stdout == (f"# configuration file {prefix}/conf/pyngx.conf:\n{OK_CONF}\n"
                           f"# configuration file {prefix}/conf/extra/dicts.conf:\npython_shared_dict d 64k;\n\n")


def test_prefix_and_relative_conf(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("cwd")
    (prefix / "conf" / "other.conf").write_text("worker_processes 2;\n")
    proc = pyngx(elsewhere, "-p", str(prefix), "-c", "conf/other.conf", "-t")
    assert proc.returncode == 0 and f"{prefix}/conf/other.conf test is successful" in proc.stderr
    glued = pyngx(elsewhere, f"-p{prefix}", "-t", "-q")
    assert (glued.returncode, glued.stderr) == (0, "")


def test_missing_config(tmp_path: Path) -> None:
    proc = pyngx(tmp_path, "-t")
    assert proc.returncode == 1
    assert proc.stderr == ('pyngx: [emerg] open() "conf/pyngx.conf" failed (2: No such file or directory)\n'
                           "pyngx: configuration file conf/pyngx.conf test failed\n")


def test_global_directives(prefix: Path) -> None:
    assert pyngx(prefix, "-g", "worker_processes 3; daemon off;", "-tq").returncode == 0
    proc = pyngx(prefix, "-g", "bogus on;", "-t")
    assert proc.returncode == 1
    assert proc.stderr.startswith('pyngx: [emerg] unknown directive "bogus" in command line\n')


def test_python_dash_m_and_the_console_script_agree(tmp_path: Path) -> None:
    v = pyngx(tmp_path, "-v")
    assert (v.returncode, v.stdout, v.stderr) == (0, "", "pyngx version: pyngx/0.1.0\n")
    script = Path(sys.executable).parent / "pyngx"  # beside the interpreter (not a pyenv shim: slow)
    if script.exists():  # installed with pip: the console script is the same main()
        proc = subprocess.run([str(script), "-v"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stderr) == (0, v.stderr)
