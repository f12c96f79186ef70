"""python_cluster and python_cluster_retention: values, defaults, and nothing of redis loaded by reading them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyngx import conf
from pyngx.conf.model import ClusterConf
from pyngx.runtime import cluster
from support import REPO


def load(tmp_path: Path, http: str) -> conf.Config:
    (tmp_path / "c.conf").write_text("http {\n" + http + "\n}\n")
    return conf.load("c.conf", str(tmp_path))


def test_values_and_defaults(tmp_path: Path) -> None:
    c = load(tmp_path, "python_cluster redis://127.0.0.1:6379/0;")
    assert c.http is not None
    assert c.http.cluster == ClusterConf("redis://127.0.0.1:6379/0", file=str(tmp_path / "c.conf"), line=2)
    c = load(tmp_path, "python_cluster_retention 500;\npython_cluster rediss://u:p@h:1/3 name=shop node=n-1 "
                       "lease=1500ms buffer=7;")
    assert c.http is not None and c.http.cluster is not None
    got = c.http.cluster
    assert (got.url, got.name, got.node, got.lease, got.buffer, got.retention) == (
        "rediss://u:p@h:1/3", "shop", "n-1", 1.5, 7, 500)
    c = load(tmp_path, "python_cluster_retention 500;")
    assert c.http is not None and c.http.cluster is None


@pytest.mark.parametrize("args, message", [
    ("redis://h name=a/b", 'invalid name "a/b"'),
    ("redis://h node=", 'invalid parameter "node="'),
    ("redis://h buffer=0", 'invalid number "0", it must be at least 1'),
    ("redis://h lease=50ms", 'invalid lease "50ms", it must be at least 100ms'),
    ("redis://h name=a name=b", 'invalid parameter "name=b"'),
    ("redis:///0", 'invalid Redis URL "redis:///0" (no host)'),
    ("unix://", 'invalid Redis URL "unix://" (no socket path)'),
])
def test_bad_arguments_name_the_line(tmp_path: Path, args: str, message: str) -> None:
    with pytest.raises(conf.ConfError) as info:
        load(tmp_path, f"python_cluster {args};")
    assert message in str(info.value) and str(info.value).endswith("c.conf:2")


def test_default_node_name_is_stable_per_prefix(tmp_path: Path) -> None:
    assert cluster.default_node(str(tmp_path)) == cluster.default_node(str(tmp_path) + "/")
    assert cluster.default_node(str(tmp_path / "a")) != cluster.default_node(str(tmp_path / "b"))


def test_reading_a_cluster_config_imports_no_redis(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text("http { python_cluster redis://127.0.0.1:6379/0; }\n")
    code = ("import sys; from pyngx import conf, events, timer; conf.load('c.conf', sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis' or m == 'pyngx.runtime.cluster'))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "daemon"), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
