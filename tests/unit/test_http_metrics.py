"""pyngx.http.metrics: numbers the table does not name yet still become labelled series."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pyngx.http import metrics

DATA = {
    "pid": 1234, "type": "worker", "worker_id": 1, "master_pid": 1, "generation": 3,
    "loop": {"stalls": 2, "max_stall_seconds": 0.25},  # a part the table does not know
    "rss_bytes": 1 << 20,
    "processes": [
        {"pid": 10, "type": "worker", "worker_id": 0, "generation": 2, "ready": True, "rss_bytes": 5},
        {"pid": 11, "type": "worker", "worker_id": 0, "generation": 3, "ready": False, "rss_bytes": 7},
        {"pid": 12, "type": "privileged agent", "worker_id": None, "generation": 3, "ready": True, "name": "x"},
    ],
    "shared_dicts": {'we"ird\\': {"capacity": 8192, "engine": "c"}},
}


def families() -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render(DATA))}


def test_an_unknown_number_is_a_gauge_with_this_process_s_labels() -> None:
    fams = families()
    (stalls,) = fams["pyngx_loop_stalls"].samples  # type: ignore[attr-defined]
    assert stalls.labels == {"type": "worker", "worker_id": "1"} and stalls.value == 2
    assert fams["pyngx_loop_stalls"].type == "gauge" and fams["pyngx_loop_stalls"].documentation  # type: ignore[attr-defined]
    assert fams["pyngx_rss_bytes"].samples[0].value == 1 << 20  # type: ignore[attr-defined]


def test_a_new_per_process_field_is_labelled_by_type_and_worker_id_newest_generation_first() -> None:
    fams = families()
    rss = {s.labels.get("worker_id"): s.value for s in fams["pyngx_process_rss_bytes"].samples}  # type: ignore[attr-defined]
    assert rss == {"0": 7}  # the generation-3 worker 0, not the one leaving; the agent has none
    ready = {(s.labels["type"], s.labels.get("worker_id")): s.value
             for s in fams["pyngx_process_ready"].samples}  # type: ignore[attr-defined]
    assert ready == {("worker", "0"): 0, ("privileged agent", None): 1}
    assert {s.labels["type"]: s.value for s in fams["pyngx_processes"].samples} == {  # type: ignore[attr-defined]
        "worker": 2, "privileged agent": 1}


def test_label_values_are_escaped() -> None:
    (cap,) = families()["pyngx_shared_dict_capacity_bytes"].samples  # type: ignore[attr-defined]
    assert cap.labels == {"dict": 'we"ird\\'} and cap.value == 8192


def test_every_table_row_names_a_valid_family() -> None:
    names = [f.metric for f in metrics.FAMILIES if f.kind != "skip"]
    assert len(names) == len(set(names))
    for f in metrics.FAMILIES:
        assert f.kind in ("counter", "gauge", "skip") and f.help.endswith((".", "above"))
        assert (f.kind == "counter") == f.metric.endswith("_total")
        assert ("seconds" in f.name or "bytes" in f.name) or not any(u in f.path[-1] for u in ("size", "capacity"))
