"""The local target end to end on a broken input: real Airflow, the steps run in this process's Spark
session (the demo, tests/test_newcomer_commands.py, runs them with spark-submit)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_and_good_images(tmp_path, fruit_images) -> Path:
    folder = tmp_path / "images"
    for source in sorted((fruit_images / "Training").glob("*/0_100.jpg")):
        (folder / source.parent.name).mkdir(parents=True)
        (folder / source.parent.name / "0.jpg").write_bytes(source.read_bytes())
    (folder / "Kiwi" / "empty.jpg").write_bytes(b"")
    (folder / "Kiwi" / "half.jpg").write_bytes((folder / "Kiwi" / "0.jpg").read_bytes()[:400])
    return folder


def test_too_many_broken_images_fail_the_run_with_a_report_and_replace_only_its_folder(
    load_dag, airflow_db, spark_steps_in_process_for_test, broken_and_good_images, seed_model_cache, tmp_path
):
    results = tmp_path / "results"
    logical_date = datetime(2026, 11, 20, 2, tzinfo=UTC)
    this_run, other_run = results / "20261120T020000Z", results / "20261119T020000Z"
    for folder in (this_run, other_run):
        folder.mkdir(parents=True)
        (folder / "left-from-before.txt").write_text("stale")
    seed_model_cache(results)

    dag = load_dag("local")
    conf = {"images_uri": str(broken_and_good_images), "results_uri": f"file://{results}", "weights": "random",
            "max_error_share": 0.1}  # fmt: skip
    run = dag.test(logical_date=logical_date, run_conf=conf)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states == {
        **dict.fromkeys(["validate_params", "find_changes", "empty_run_folder", "upload_code"], "success"),
        **dict.fromkeys(["featurize", "pca", "export_csv"], "success"),
        "check_outputs": "failed",
        "remove_old_runs": "upstream_failed",  # a failed run deletes nothing
        "write_report": "success",
    }
    report = json.loads((this_run / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["counts"] == {
        "images": 12, "featurised": 10, "errors": 2, "error_share": 0.166667, "pca_rows": 10, "csv_rows": 10,
        "reused": 0, "new": 11, "changed": 0, "removed": 0, "through_network": 11,  # Spark's scan skips empty files
    }  # fmt: skip
    assert not (results / "latest.json").exists()  # a failed run is never the last good one
    problem = f"2 of 12 images could not be featurised (16.7% > the tolerated 10.0%); see {this_run / 'errors'}"
    assert report["problems"] == [problem]
    assert (report["failed_task"], report["error"]) == ("check_outputs", problem)
    errors = pd.read_parquet(this_run / "errors").sort_values("path")
    assert [Path(p).name for p in errors["path"]] == ["empty.jpg", "half.jpg"]
    html = (this_run / "report.html").read_text()
    assert "Task <b>check_outputs</b>" in html and html.count('src="data:image/png;base64,') == 2
    assert all(f"{path}</td>" in html for path in errors["path"])  # the rows that could not be read
    assert len(pd.read_csv(this_run / "pca_features.csv")) == 10

    assert not (this_run / "left-from-before.txt").exists()
    assert (other_run / "left-from-before.txt").read_text() == "stale"
