"""`make demo`'s own logic, without running the DAG: which run folder its summary names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scripts.demo import DAG_ID, folder_claimed_since

STARTED = datetime(2026, 12, 5, 12, 34, 35, 844176, tzinfo=UTC)


def claim(results: Path, key: str, at: datetime, dag_id: str = DAG_ID) -> None:
    folder = results / key
    folder.mkdir(parents=True)
    claimed_at = at.isoformat(timespec="seconds")
    marker = {"dag_id": dag_id, "dag_run_id": f"manual__{at.isoformat()}", "claimed_at": claimed_at}
    (folder / "_dag_run.json").write_text(json.dumps(marker))


def test_a_second_demo_the_same_day_reports_the_folder_its_own_run_claimed(tmp_path):
    claim(tmp_path, "20261205T000000Z", STARTED - timedelta(minutes=5))  # the day's first demo
    claim(tmp_path, "20261205T000000Z-000000", STARTED + timedelta(seconds=4))  # this one: a longer name
    claim(tmp_path, "20261206T000000Z", STARTED + timedelta(seconds=6), dag_id="another_dag")
    assert folder_claimed_since(tmp_path, STARTED) == tmp_path / "20261205T000000Z-000000"


def test_a_claim_in_the_second_the_demo_started_is_its_own_and_none_is_none(tmp_path):
    assert folder_claimed_since(tmp_path / "never written", STARTED) is None
    claim(tmp_path, "20261205T000000Z", STARTED.replace(microsecond=0))  # claims are written to the second
    assert folder_claimed_since(tmp_path, STARTED) == tmp_path / "20261205T000000Z"
    assert folder_claimed_since(tmp_path, STARTED + timedelta(seconds=1)) is None
