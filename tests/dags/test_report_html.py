"""report.html's sections that only some runs have: an EMR cluster's time and cost, retention, a
failed step's error; and text from the run is shown, never interpreted."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fruitflow_pipeline.report_html import first_error_rows, headline, render_report_html, report_html_for
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.storage import LocalStorage

BASE = {
    "run": "20261125T020000Z",
    "target": "emr",
    "finished_at": "2026-11-25T02:50:00+00:00",
    "inputs": {"images_uri": "s3://fruits/images", "weights": "imagenet", "code_uri": "s3://fruits/results/_code/x"},
    "cluster_id": "j-NIGHT",
    "tasks": {"validate_params": "success", "watch_featurize": "failed", "terminate_cluster": "success"},
    "bytes_written": 1_234_567,
}


OLD_GOOD = "good run beyond the 7 newest"


def test_a_failed_emr_run_shows_its_error_cluster_time_and_what_retention_did():
    report = BASE | {
        "status": "failed",
        "failed_task": "watch_featurize",
        "error": "step featurize ended FAILED: <OutOfMemory> & more; logs: s3://fruits/results/_emr_logs/j-NIGHT/steps/",
        "steps_finished": {},
        "problems": [],
        "cluster": {
            "id": "j-NIGHT", "state": "TERMINATED", "state_reason": None,
            "phases_seconds": {"provisioning": 180.0, "bootstrap": 360.0, "steps": None, "after_steps": None,
                               "total": 900.0},
            "instance_seconds": {"m5.2xlarge:ON_DEMAND": 7200.0, "m5.xlarge:ON_DEMAND": 900.0},
            "normalized_instance_hours": 24,
            "estimated_cost": {"total": 1.02, "by_kind": {}},
        },
        "retention": {"enabled": True, "dry_run": True, "keep_runs": 7, "keep_failed_days": 14, "kept": 8,
                      "deleted": [{"run": "20261101T020000Z", "bytes": 460_000_000, "reason": OLD_GOOD}],
                      "deleted_bytes": 460_000_000},
    }  # fmt: skip
    html = render_report_html(report, {"explained_variance": None, "scatter": None}, [])

    assert ">failed</span>" in html and "Task <b>watch_featurize</b>" in html
    assert "&lt;OutOfMemory&gt; &amp; more; logs: s3://fruits/results/_emr_logs/j-NIGHT/steps/" in html
    assert "<td>bootstrap</td><td class=number>360.0</td>" in html
    assert "<td>steps</td><td>not reached</td>" in html
    assert "<td>m5.2xlarge:ON_DEMAND</td><td class=number>2.0</td>" in html
    assert "Estimated cost: <b>1.02</b>" in html
    assert "This run wrote 1.2 MB." in html
    assert "Retention would delete (dry run) 1 old run folders (460.0 MB)." in html
    assert "<td>20261101T020000Z</td><td>460.0 MB</td><td>good run beyond the 7 newest</td>" in html
    assert "<h2>Features</h2>" not in html  # no PCA ran


def test_a_cluster_emr_could_not_describe_and_a_missing_price_are_said_so():
    unreadable = BASE | {"status": "failed", "cluster": {"id": "j-GONE", "error": "AccessDenied"}}
    assert "j-GONE: not readable from EMR (AccessDenied)" in render_report_html(unreadable, {}, [])
    cluster = {"id": "j-1", "state": "TERMINATED", "phases_seconds": {}, "instance_seconds": {},
               "normalized_instance_hours": 8,
               "estimated_cost": {"total": None, "missing_prices": ["m5.2xlarge:SPOT"]}}  # fmt: skip
    html = render_report_html(BASE | {"status": "succeeded", "cluster": cluster}, {}, [])
    assert "No cost estimate: no price for m5.2xlarge:SPOT" in html


def errors_part(paths: list[str]) -> bytes:
    table = pa.table({"path": paths, "label": ["Kiwi"] * len(paths), "error": [f"bad {p}" for p in paths]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_the_first_error_rows_come_from_one_part_up_to_the_limit():
    rows = first_error_rows(errors_part(["a", "b", "c", "d", "e", "f"]), limit=5)
    assert rows == [{"path": name, "error": f"bad {name}"} for name in "abcde"]


def test_the_page_reads_one_error_part_whatever_the_number_of_parts(tmp_path):
    """write_report opens a single part of errors/ (the largest: an empty part is its schema alone)."""
    run = PipelineRun("K", "/in", str(tmp_path), "v1", 0.9, "random", 16, 0.05, "onnx")
    errors = Path(run.errors_uri)
    errors.mkdir(parents=True)
    (errors / "part-00000.parquet").write_bytes(errors_part([]))
    (errors / "part-00001.parquet").write_bytes(errors_part(["x.jpg", "y.jpg"]))
    for index in range(2, 6):
        (errors / f"part-0000{index}.parquet").write_bytes(errors_part([f"{index}.jpg"]))
    read = []

    class CountingStorage(LocalStorage):
        def read_bytes(self, uri: str) -> bytes:
            read.append(uri)
            return super().read_bytes(uri)

    names = ("images", "featurised", "new", "changed", "reused", "removed", "through_network", "csv_rows")
    counts = dict.fromkeys(names, 0) | {"images": 6, "errors": 6}
    report = BASE | {"status": "failed", "counts": counts, "outputs": {"errors": run.errors_uri, "csv": run.csv_uri}}
    html = report_html_for(report, run, CountingStorage())
    assert read == [f"{run.errors_uri}/part-00001.parquet"]
    assert "<td>x.jpg</td><td>bad x.jpg</td>" in html and "4 more in" in html


def test_the_page_opens_with_what_happened_what_to_do_and_every_cluster_of_the_run():
    report = BASE | {
        "status": "failed",
        "failed_task": "terminate_cluster",
        "error": "An error occurred (AccessDeniedException) when calling the TerminateJobFlows operation",
        "error_line": "An error occurred (AccessDeniedException) when calling the TerminateJobFlows operation",
        "advice": "the cluster may still be running: terminate it by hand in the EMR console",
        "clusters": [
            {"id": "j-ORPHAN", "state": "TERMINATED", "reason": "USER_REQUEST: Terminated by user request"},
            {"id": "j-NIGHT", "state": "WAITING", "reason": ""},
        ],
        "steps_finished": {},
        "problems": [],
    }
    html = render_report_html(report, {"explained_variance": None, "scatter": None}, [])

    body = html.split("</h1>", 1)[1]
    assert body.startswith(
        "<p class=headline style='border-color:#cf222e'>Failed at terminate_cluster: An error occurred "
        "(AccessDeniedException) when calling the TerminateJobFlows operation. What to do: the cluster may still "
        "be running: terminate it by hand in the EMR console.</p>"
        "<p>Clusters this run started: j-ORPHAN TERMINATED (USER_REQUEST: Terminated by user request); "
        "j-NIGHT WAITING</p>"
    )


def test_a_good_and_an_unchanged_night_say_there_is_nothing_to_do():
    good = BASE | {"status": "succeeded", "counts": {"images": 20, "featurised": 19}, "pca": {"k": 3}}
    unchanged = BASE | {"status": "unchanged", "unchanged_since": "20261124T020000Z"}

    assert headline(good) == "Succeeded: 19 of 20 images featurised, k = 3 components. Nothing to do."
    assert headline(unchanged) == "Nothing to do: unchanged since 20261124T020000Z, no cluster started."
