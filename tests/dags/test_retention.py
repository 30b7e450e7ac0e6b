"""Retention on a results folder laid out as runs leave it: what goes, what stays and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fruitflow_pipeline.retention import apply_retention, run_folders_of
from fruitflow_pipeline.settings import RetentionSettings, SettingError, Settings
from fruitflow_pipeline.storage import LocalStorage

DAG_ID = "fruits_features"
NOW = datetime(2026, 12, 1, 3, tzinfo=UTC)


def run_folder(results: Path, key: str, status: str | None, days_old: float, dag_id: str = DAG_ID) -> Path:
    """A run's folder as the DAG leaves it: its claim, a report with ``status`` (none when None), and 1 kB of
    outputs."""
    folder = results / key
    (folder / "features").mkdir(parents=True)
    (folder / "features" / "part-0.parquet").write_bytes(b"x" * 1000)
    claimed = (NOW - timedelta(days=days_old)).isoformat(timespec="seconds")
    (folder / "_dag_run.json").write_text(
        json.dumps({"dag_id": dag_id, "dag_run_id": f"run_{key}", "claimed_at": claimed})
    )
    if status:
        (folder / "report.json").write_text(json.dumps({"run": key, "status": status}))
    return folder


@pytest.fixture
def results(tmp_path) -> Path:
    """Nine nights of this DAG, another DAG's run, and what else lives under a results prefix."""
    results = tmp_path / "results"
    run_folder(results, "20261101T020000Z", "succeeded", 30)  # old good: beyond the newest two
    run_folder(results, "20261102T020000Z", "failed", 29)  # old failed: past 14 days
    run_folder(results, "20261103T020000Z", "unchanged", 28)  # an unchanged night, long ago
    run_folder(results, "20261104T020000Z", None, 27)  # no report, its run long over
    run_folder(results, "20261105T020000Z", "failed", 26)  # old, but its DAG run is active (cleared, queued)
    run_folder(results, "20261125T020000Z", "succeeded", 6)  # good, beyond the newest two
    run_folder(results, "20261126T020000Z", "failed", 5)  # recent failure: kept for debugging
    run_folder(results, "20261128T020000Z", "succeeded", 3)  # second newest good
    run_folder(results, "20261130T020000Z-200000", "succeeded", 1)  # newest good: latest.json's
    run_folder(results, "20261020T020000Z", "succeeded", 40, dag_id="another_dag")
    (results / "20261021T020000Z" / "features").mkdir(parents=True)  # a run key, but nobody claimed it
    for foreign in ("_code/abc", "_models/onnx", "_emr_logs/j-1", "exports"):
        (results / foreign).mkdir(parents=True)
        (results / foreign / "file.txt").write_text("not a run")
    (results / "latest.json").write_text(json.dumps({"run_key": "20261130T020000Z-200000"}))
    return results


def retain(results: Path, **policy) -> dict:
    return apply_retention(
        LocalStorage(),
        str(results),
        DAG_ID,
        RetentionSettings(**policy),
        latest_key="20261130T020000Z-200000",
        is_active=lambda dag_run_id: dag_run_id == "run_20261105T020000Z",
        now=NOW,
    )


def names(results: Path) -> set[str]:
    return {path.name for path in results.iterdir()}


def test_retention_deletes_only_this_dags_old_runs(results, caplog):
    before = names(results)
    caplog.set_level("INFO", logger="fruitflow_pipeline.retention")

    outcome = retain(results, keep_runs=2, keep_failed_days=14)

    gone = {"20261101T020000Z", "20261102T020000Z", "20261103T020000Z", "20261104T020000Z", "20261125T020000Z"}
    assert names(results) == before - gone
    assert [entry["run"] for entry in outcome["deleted"]] == sorted(gone, reverse=True)
    assert outcome["deleted_bytes"] == sum(entry["bytes"] for entry in outcome["deleted"])
    assert outcome["kept"] == 4  # latest, the other good one, the active run and the recent failure
    sizes = {entry["run"]: entry["bytes"] for entry in outcome["deleted"]}
    claim_bytes = len((results / "20261126T020000Z" / "_dag_run.json").read_text())
    assert sizes["20261104T020000Z"] == 1000 + claim_bytes  # outputs and claim, no report
    report_bytes = len(json.dumps({"run": "20261101T020000Z", "status": "succeeded"}))
    assert sizes["20261101T020000Z"] == 1000 + claim_bytes + report_bytes
    for foreign in ("_code", "_models", "_emr_logs", "exports", "20261020T020000Z", "20261021T020000Z"):
        assert (results / foreign).exists(), foreign
    assert (results / "latest.json").exists()
    log = caplog.text
    assert f"deleting {results}/20261101T020000Z ({sizes['20261101T020000Z']:,} bytes): good run beyond" in log
    assert f"keeping {results}/20261105T020000Z" in log and "its DAG run run_20261105T020000Z is still active" in log
    assert "failed run, 5 days old: not older than 14 days" in log


def test_latest_is_kept_even_when_it_is_not_among_the_newest_good_runs(results):
    (results / "latest.json").write_text(json.dumps({"run_key": "20261101T020000Z"}))
    outcome = apply_retention(
        LocalStorage(),
        str(results),
        DAG_ID,
        RetentionSettings(keep_runs=1),
        latest_key="20261101T020000Z",
        is_active=lambda dag_run_id: False,
        now=NOW,
    )
    assert (results / "20261101T020000Z").exists()
    assert (results / "20261130T020000Z-200000").exists()  # the newest good one
    assert {"20261128T020000Z", "20261125T020000Z"} <= {entry["run"] for entry in outcome["deleted"]}


def test_dry_run_deletes_nothing_and_says_what_would_go(results, caplog):
    caplog.set_level("INFO", logger="fruitflow_pipeline.retention")
    before = names(results)

    outcome = retain(results, keep_runs=2, keep_failed_days=14, dry_run=True)

    assert names(results) == before
    assert outcome["dry_run"] is True and len(outcome["deleted"]) == 5
    assert f"would delete {results}/20261125T020000Z" in caplog.text


def test_retention_is_off_unless_the_deployment_sets_keep_runs(results):
    before = names(results)
    assert retain(results) == {"enabled": False}
    assert names(results) == before


def test_an_unreadable_claim_keeps_its_folder(results, caplog):
    (results / "20261101T020000Z" / "_dag_run.json").write_text("{not json")
    keys = {folder.key for folder in run_folders_of(LocalStorage(), str(results), DAG_ID)}
    assert "20261101T020000Z" not in keys and "20261125T020000Z" in keys
    retain(results, keep_runs=1, keep_failed_days=0)
    assert (results / "20261101T020000Z").exists()
    assert "keeping" in caplog.text and "unreadable" in caplog.text


def test_retention_settings():
    assert Settings.from_env({}).retention == RetentionSettings(keep_runs=0, keep_failed_days=14, dry_run=False)
    env = {"FRUITFLOW_KEEP_RUNS": "7", "FRUITFLOW_KEEP_FAILED_DAYS": "0", "FRUITFLOW_RETENTION_DRY_RUN": "true"}
    assert Settings.from_env(env).retention == RetentionSettings(keep_runs=7, keep_failed_days=0, dry_run=True)
    for variable, value in [("KEEP_RUNS", "-1"), ("KEEP_RUNS", "two"), ("KEEP_FAILED_DAYS", "1.5")]:
        with pytest.raises(SettingError, match=f"FRUITFLOW_{variable}='{value}' must be a whole number"):
            Settings.from_env({f"FRUITFLOW_{variable}": value})
    with pytest.raises(SettingError, match="FRUITFLOW_RETENTION_DRY_RUN='maybe': use true or false"):
        Settings.from_env({"FRUITFLOW_RETENTION_DRY_RUN": "maybe"})
