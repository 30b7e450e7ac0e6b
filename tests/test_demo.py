"""`make demo`'s own logic, without running the DAG: its settings, what a failed task shows, and which
run folder its summary names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fruitflow_pipeline.run_folder import MARKER
from rehearsal.__main__ import bucket_deployment
from scripts.demo import DAG_ID, BadInput, folder_claimed_since, inputs_from_env, local_deployment, progress

STARTED = datetime(2026, 12, 5, 12, 34, 35, 844176, tzinfo=UTC)


def claim(results: Path, key: str, at: datetime, dag_id: str = DAG_ID) -> None:
    folder = results / key
    folder.mkdir(parents=True)
    claimed_at = at.isoformat(timespec="seconds")
    marker = {"dag_id": dag_id, "dag_run_id": f"manual__{at.isoformat()}", "claimed_at": claimed_at}
    (folder / MARKER).write_text(json.dumps(marker))


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


def test_a_task_that_fails_shows_its_reason_not_only_the_logs_path():
    traceback = [
        '    raise AirflowFailException(f"invalid params: {problem}") from None\n',
        "airflow.sdk.exceptions.AirflowFailException: invalid params: weights: no file at /nonexistent.h5\n",
    ]
    assert [progress(line) for line in traceback] == [None, "invalid params: weights: no file at /nonexistent.h5"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ENGINE": "onnxx"}, "ENGINE=onnxx is not an engine: use onnx, openvino, openvino-bf16, tensorflow"),
        ({"COUNT": "2OO"}, "COUNT=2OO is not a number of images: use a whole number of at least 1"),
        ({"COUNT": "0"}, "COUNT=0 is not a number of images"),
        ({"IMAGES": "/no/such/folder"}, "IMAGES=/no/such/folder is not a folder"),
        ({"CONF": "{max_error_share: 0.2}"}, "CONF is not JSON: Expecting property name"),
        ({"CONF": "[0.2]"}, "CONF must be a JSON object of params"),
        ({"CONF": '{"max_error_share": 2}'}, "would be refused: Invalid input for param max_error_share"),
        ({"CONF": '{"max_error_shares": 0.2}'}, r"would be refused: conf: unknown key\(s\) max_error_shares"),
        ({"CONF": '{"engine": "tensorflow"}'}, "CONF sets engine: give ENGINE= instead"),
        ({"CONF": '{"core_instance_count": 3}'}, r"unknown key\(s\) core_instance_count"),  # an EMR param
    ],
)
def test_a_bad_setting_is_named_before_any_sample_image_is_generated(settings, message, tmp_path, monkeypatch):
    for name in ("IMAGES", "COUNT", "WEIGHTS", "ENGINE", "CONF"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BadInput, match=message) as refused:
        inputs_from_env(tmp_path, local_deployment(tmp_path))
    assert "\n" not in str(refused.value)  # one line in the terminal
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("deployment", "conf"),
    [
        (local_deployment, {"max_error_share": 0.2, "variance": 0.9}),
        (bucket_deployment, {"max_error_share": 0.2, "core_instance_count": 3}),
    ],
)
def test_conf_reaches_the_run_as_a_trigger_would_give_it(deployment, conf, tmp_path, monkeypatch):
    for name in ("IMAGES", "WEIGHTS", "ENGINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COUNT", "3")
    monkeypatch.setenv("CONF", json.dumps(conf))
    inputs = inputs_from_env(tmp_path, deployment(tmp_path))
    assert (inputs.conf, inputs.engine, len(list(inputs.images.rglob("*.jpg")))) == (conf, "onnx", 3)
