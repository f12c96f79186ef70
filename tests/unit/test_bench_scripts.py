"""The benchmark scripts: none installs anything; bench_all's page is one table, a chart, the facts."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent.parent / "scripts"


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))
    try:
        loader = importlib.machinery.SourceFileLoader(f"script_{name}", str(SCRIPTS / name))
        spec = importlib.util.spec_from_loader(loader.name, loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[loader.name] = module  # dataclasses look their module up there
        loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.mark.parametrize("path", sorted(p for p in SCRIPTS.iterdir() if p.is_file()), ids=lambda p: p.name)
def test_no_script_installs_packages(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"""\[\s*["'](apt-get|apt|dpkg|pip|pip3)["']""", text), path.name
    assert not re.search(r"""["']-m["'],\s*["']pip["']""", text), path.name


def test_a_missing_reference_is_named_not_installed(capsys: pytest.CaptureFixture[str]) -> None:
    benchlib = load("benchlib.py")
    assert benchlib.missing_reference([("/nonexistent/*/x.so", "pkg-a"), ("no-such-command-x", "pkg-b")])[-2:] == [
        "pkg-a", "pkg-b"]
    with pytest.raises(SystemExit) as info:
        benchlib.require_reference([("no-such-command-x", "pkg-b")])
    assert "apt-get install" in str(info.value) and "pkg-b" in str(info.value)


ROWS = [
    {"bench": "bench_http", "measure": "hello world, 1 worker(s): requests/s", "unit": "req/s", "pyngx": 100_000.0,
     "reference": "nginx+lua", "ref_value": 150_000.0, "higher_is_better": True},
    {"bench": "bench_http", "measure": "hello world, 1 worker(s): CPU per request", "unit": "µs", "pyngx": 9.0,
     "reference": "nginx+lua", "ref_value": 6.0, "higher_is_better": False},
    {"bench": "bench_ipc", "measure": "100 B round trip, median", "unit": "µs", "pyngx": 30.0,
     "reference": "os.pipe", "ref_value": 90.0, "higher_is_better": False},
    {"bench": "bench_events", "measure": "cross-worker latency, median", "unit": "ms", "pyngx": 0.5,
     "reference": "", "ref_value": None, "higher_is_better": False},
]


def test_the_page_has_one_table_the_facts_and_no_history_words(tmp_path: Path) -> None:
    bench_all = load("bench_all")
    assert bench_all.speedup(ROWS[0]) == pytest.approx(2 / 3) and bench_all.speedup(ROWS[2]) == pytest.approx(3)
    assert bench_all.speedup(ROWS[3]) is None
    import datetime
    when = datetime.datetime(2026, 12, 3, 9, 0, tzinfo=datetime.timezone.utc)
    page = bench_all.page(ROWS, ["http", "ipc", "events"], False, [], when, (1.0, 2.0), True)
    assert page.count("| benchmark |") == 1 and "![pyngx against each reference](benchmarks.png)" in page
    assert "2026-12-03 09:00 UTC" in page and "## Machine" in page and "## Versions" in page
    assert "1.50x slower" in page and "3.00x faster" in page
    for word in ("issue", "target", "morning", "earlier pass"):
        assert word not in page.lower(), word
    pytest.importorskip("matplotlib")
    assert bench_all.chart(ROWS, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_all_runs_every_bench_script_and_each_notes_its_figures() -> None:
    bench_all = load("bench_all")
    assert bench_all.unlisted() == []
    for name, bench in bench_all.BENCHES.items():
        assert bench.name == name and bench.what and "--" in " ".join(bench.args + bench.quick), name
        assert f'"bench_{name}"' in (SCRIPTS / f"bench_{name}").read_text(), f"bench_{name} calls no record()"
        assert "benchlib.record(" in (SCRIPTS / f"bench_{name}").read_text(), name


def test_the_page_describes_each_benchmark_and_says_what_was_not_measured() -> None:
    bench_all = load("bench_all")
    import datetime
    when = datetime.datetime(2026, 12, 3, 9, 0, tzinfo=datetime.timezone.utc)
    page = bench_all.page(ROWS, ["http", "log", "cluster"], True, ["`bench_log` (exit status 1)"], when, (1.0, 2.0),
                          False)
    assert "This page is generated" in page and "--quick" in page
    for name in ("http", "log", "cluster"):
        assert f"- `scripts/bench_{name}`: {bench_all.BENCHES[name].what}." in page
    assert "Not measured in this pass: `bench_log` (exit status 1)." in page
    assert "benchlib.record(" in page and "one row to `BENCHES`" in page  # how to add one


def test_bench_cluster_reads_redis_benchmarks_final_figure_not_the_commands_arguments() -> None:
    out = ("\rXADD bench:s MAXLEN ~ 100000 * p xx: rps=0.0 (overall: 100000.0) avg_msec=0.540 (overall: 0.540)\r"
           "\rXADD bench:s MAXLEN ~ 100000 * p xx: 304878.03 requests per second, p50=0.287 msec\n")
    assert load("bench_cluster")._rps(out) == pytest.approx(304878.03)
    assert load("bench_cluster")._rps("") == 0.0
