"""The README's commands as a newcomer runs them, each a process of its own with a clean environment:
`make demo` (the local target, its steps submitted with spark-submit) and `make rehearse` (the EMR
target against moto, its steps run by the rehearsal cluster)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[1]


def newcomer_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This machine's environment without the test process's Airflow, fruitflow, Spark and AWS settings."""
    own = ("AIRFLOW", "FRUITFLOW", "PYSPARK", "AWS")
    env = {key: value for key, value in os.environ.items() if not key.startswith(own)}
    return env | {"AIRFLOW_HOME": str(tmp_path / "airflow"), "DATA_DIR": str(tmp_path / "data"), **settings}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_make_demo_runs_the_dag_and_reports_where_the_results_are(tmp_path, seed_model_cache):
    seed_model_cache(tmp_path / "data" / "results")  # as after an earlier demo: converting is tested elsewhere
    demo = run([sys.executable, str(ROOT / "scripts" / "demo.py")], newcomer_environment(tmp_path, COUNT="12",
               WEIGHTS="random"))  # fmt: skip

    run_folder = tmp_path / "data" / "results" / datetime.now(UTC).strftime("%Y%m%dT000000Z")
    assert "images:  12 read, 12 featurised" in demo.stdout
    # The featurize task's log (airflow dags test prints it) has the job's progress, shown by the demo too.
    task_log = (tmp_path / "airflow" / "demo.log").read_text()
    assert "featurize progress: 12/12 images (100%)" in task_log
    assert "featurize progress: 12/12 images (100%)" in demo.stdout
    assert "featurize done: images=12 featurised=12 errors=0 model_rows=12 reused=0 new=12" in task_log
    assert "model cache: using" in task_log
    assert f"CSV:     {run_folder / 'pca_features.csv'}" in demo.stdout
    assert f"plot:    {run_folder / 'explained_variance.png'}" in demo.stdout
    assert f"scatter: {run_folder / 'pca_scatter.png'}" in demo.stdout
    assert f"page:    {run_folder / 'report.html'} (open it in a browser)" in demo.stdout
    for task in (
        "validate_params",
        "empty_run_folder",
        "upload_code",
        "featurize",
        "pca",
        "export_csv",
        "check_outputs",
        "remove_old_runs",
        "write_report",
    ):
        assert f"  {task}\n" in demo.stdout

    csv = pd.read_csv(run_folder / "pca_features.csv")
    report = json.loads((run_folder / "report.json").read_text())
    assert len(csv) == 12 == report["counts"]["csv_rows"]
    assert list(csv.columns[:3]) == ["path", "label", "pc_1"] and len(csv.columns) == report["pca"]["k"] + 2
    assert csv["label"].nunique() == 10
    assert (run_folder / "explained_variance.png").read_bytes().startswith(b"\x89PNG")
    assert (run_folder / "pca_scatter.png").read_bytes().startswith(b"\x89PNG")
    assert report["status"] == "succeeded" and report["target"] == "local"

    # Again the same day, nothing changed: a DAG run of its own (a folder of its own) that computes nothing
    # and points at the first run's outputs.
    again = run([sys.executable, str(ROOT / "scripts" / "demo.py")], newcomer_environment(tmp_path, COUNT="12",
                WEIGHTS="random"))  # fmt: skip
    (second,) = run_folder.parent.glob(f"{run_folder.name}-*")
    assert json.loads((second / "report.json").read_text())["status"] == "unchanged"
    unchanged = f"unchanged since {run_folder.name}: same images, params, weights and jobs' code; nothing to compute"
    assert unchanged in again.stdout
    assert "featurize" not in again.stdout
    assert "images:  12 read, 12 featurised" in again.stdout
    assert f"CSV:     {run_folder / 'pca_features.csv'}" in again.stdout


@pytest.mark.slow
def test_make_rehearse_runs_the_emr_target_and_says_where_the_local_copy_is(tmp_path, seed_model_cache):
    bucket_copy = tmp_path / "data" / "rehearsal" / "fruitflow-rehearsal"
    seed_model_cache(bucket_copy / "results")  # what an earlier rehearsal left: its converted model
    rehearse = run([sys.executable, "-m", "rehearsal"], newcomer_environment(tmp_path, COUNT="10", WEIGHTS="random"))

    key = datetime.now(UTC).strftime("%Y%m%dT000000Z")
    local_copy = bucket_copy / "results" / key
    assert "images:  10 read, 10 featurised" in rehearse.stdout
    assert f"CSV:     s3://fruitflow-rehearsal/results/{key}/pca_features.csv" in rehearse.stdout
    assert f"local copy of the run folder: {local_copy}/" in rehearse.stdout
    assert "model cache: 2 file(s) kept from the last rehearsal in s3://fruitflow-rehearsal/results/_models" in (
        rehearse.stdout
    )
    rehearsal_lines = rehearse.stderr  # the rehearsal cluster logs what it ran
    assert (
        "spark-submit as run:" in rehearsal_lines and "ignored by local mode: spark.executor.cores=4" in rehearsal_lines
    )
    (featurize_stdout,) = [
        gzip.decompress(log.read_bytes()).decode()
        for log in (bucket_copy / "results" / "_emr_logs").glob("*/steps/*/stdout.gz")
        if b"model cache:" in gzip.decompress(log.read_bytes())
    ]
    assert "model cache: using s3://fruitflow-rehearsal/results/_models/" in featurize_stdout
    csv = pd.read_csv(local_copy / "pca_features.csv")
    assert len(csv) == 10 and csv["path"].str.startswith("s3://fruitflow-rehearsal/images/Training/").all()
    assert json.loads((local_copy / "report.json").read_text())["target"] == "emr"
