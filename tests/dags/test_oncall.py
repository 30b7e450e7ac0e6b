"""On call, part by part: the alert settings, a failed step's logs read back, the messages' limits,
and the late-night deadline alert's callback (what the triggerer runs) against moto's SNS."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import timedelta

import boto3
import pytest

from fruitflow_pipeline.alerts import Alert, night_is_late, run_failed_alert
from fruitflow_pipeline.settings import SettingError, Settings
from fruitflow_pipeline.step_logs import error_line, traceback_tail, wait_for_step_logs
from rehearsal.buckets import create_bucket

TOPIC = "arn:aws:sns:eu-west-1:123456789012:fruitflow-oncall"
STDOUT = """\
converting MobileNetV2 to ONNX
Traceback (most recent call last):
  File "/mnt/featurize.py", line 12, in <module>
    sys.exit(main())
  File "/mnt/fruitflow.zip/fruitflow/featurize.py", line 120, in load_model
    raise WeightsError(uri)
fruitflow.featurize.WeightsError: s3://fruits/weights/broken.h5 are not MobileNetV2 weights
"""
STDERR = "26/12/06 02:14:01 ERROR Executor: lost task 3.0\n26/12/06 02:14:03 INFO SparkContext: stopped\n"


def test_the_alert_settings_parse_and_name_what_is_wrong():
    settings = Settings.from_env(
        {
            "FRUITFLOW_ALERT_SNS_TOPIC_ARN": TOPIC,
            "FRUITFLOW_ALERT_LATE_AFTER": "1h30m",
            "FRUITFLOW_ALERT_ON_SUCCESS": "true",
            "FRUITFLOW_EMR_STEP_LOG_WAIT_SECONDS": "30",
        }
    )
    assert (settings.alerts.sns_topic_arn, settings.alerts.late_after) == (TOPIC, timedelta(hours=1, minutes=30))
    assert settings.alerts.on_success is True and settings.emr.step_log_wait_seconds == 30.0
    defaults = Settings.from_env({})
    assert (defaults.alerts.sns_topic_arn, defaults.alerts.late_after, defaults.alerts.on_success) == ("", None, False)
    assert defaults.emr.step_log_wait_seconds == 330.0

    for variable, value, message in [
        ("ALERT_SNS_TOPIC_ARN", "fruitflow-oncall", "is not an SNS topic ARN (arn:aws:sns:<region>:"),
        ("ALERT_SNS_TOPIC_ARN", TOPIC + ".fifo", "is a FIFO topic: give a standard topic"),
        ("ALERT_LATE_AFTER", "4 hours", "must be a duration such as 4h, 90m or 1h30m"),
        ("ALERT_LATE_AFTER", "0h", "must be longer than zero"),
        ("ALERT_ON_SUCCESS", "yes", "use true or false"),
    ]:
        with pytest.raises(SettingError, match=f"FRUITFLOW_{variable}=.*{message}".replace("(", r"\(")):
            Settings.from_env({f"FRUITFLOW_{variable}": value})


def test_the_jobs_error_line_and_traceback_tail_come_from_its_stdout():
    assert error_line({"stdout": STDOUT, "stderr": STDERR}) == (
        "fruitflow.featurize.WeightsError: s3://fruits/weights/broken.h5 are not MobileNetV2 weights"
    )  # the job's own line, before Spark's ERROR in stderr
    assert error_line({"stdout": "featurize: error: no images\n", "stderr": ""}) == "featurize: error: no images"
    assert error_line({"stdout": "", "stderr": STDERR}) == "26/12/06 02:14:01 ERROR Executor: lost task 3.0"
    assert error_line({"stdout": "all fine\n"}) is None
    assert traceback_tail(STDOUT, lines=3) == (
        '  File "/mnt/fruitflow.zip/fruitflow/featurize.py", line 120, in load_model',
        "    raise WeightsError(uri)",
        "fruitflow.featurize.WeightsError: s3://fruits/weights/broken.h5 are not MobileNetV2 weights",
    )
    assert traceback_tail("no traceback here\n") == ()


def test_a_watcher_waits_for_the_step_logs_and_gives_up_at_its_limit(aws):
    s3 = boto3.client("s3")
    create_bucket(s3, "fruits", "eu-west-1")
    folder = "s3://fruits/logs/j-1/steps/s-1/"
    now, polls = [0.0], []

    def sleep(seconds):  # EMR copies the logs while the watcher waits its second poll
        polls.append(seconds)
        now[0] += seconds
        if len(polls) == 2:
            for name, text in (("stdout", STDOUT), ("stderr", STDERR)):
                s3.put_object(Bucket="fruits", Key=f"logs/j-1/steps/s-1/{name}.gz", Body=gzip.compress(text.encode()))

    found = wait_for_step_logs(s3, folder, wait_seconds=330, poll_seconds=10, sleep=sleep, clock=lambda: now[0])
    assert polls == [10, 10]
    assert found.error_line.startswith("fruitflow.featurize.WeightsError: s3://fruits/weights/broken.h5")
    assert found.traceback_tail[-1] == found.error_line

    empty = wait_for_step_logs(s3, "s3://fruits/logs/j-1/steps/s-2/", 25, 10, sleep=sleep, clock=lambda: now[0])
    assert (empty.error_line, empty.traceback_tail, polls[2:]) == (None, (), [10, 10, 5])


def test_a_subject_is_one_ascii_line_under_snss_limit():
    long_reason = "featurize: error: weights\nfile s3://fruits/weights/été.h5 " + "x" * 200
    alert = run_failed_alert({"run": "20261206T020000Z", "failed_task": "watch_featurize", "error_line": long_reason},
                             "s3://fruits/results/20261206T020000Z/report.html", "scheduled__2026-12-06")  # fmt: skip
    assert len(alert.subject) == 99 and alert.subject.isascii() and "\n" not in alert.subject
    assert alert.subject.startswith(
        "fruitflow FAILED 20261206T020000Z: watch_featurize: featurize: error: weights file"
    )
    assert "été.h5" in alert.message  # the body keeps the text as it is
    assert Alert("a\tb", "").subject == "a b"


def test_the_late_night_deadline_is_airflows_and_only_when_asked(load_dag):
    from airflow.serialization.serialized_objects import DagSerialization

    assert load_dag("emr").deadline is None
    dag = load_dag("emr", alert_late_after="4h")
    (deadline,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert type(deadline.reference).__name__ == "DagRunQueuedAtDeadline"
    assert deadline.interval == timedelta(hours=4)
    assert deadline.callback.path == "fruitflow_pipeline.alerts.night_is_late"
    assert deadline.callback.kwargs == {"late_after_seconds": 14400.0}
    # What the DAG processor stores for the scheduler, read back as dag.test() reads it.
    (stored,) = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).deadline
    assert stored["reference"] == {"reference_type": "DagRunQueuedAtDeadline"}
    assert stored["callback"]["__data__"]["path"] == "fruitflow_pipeline.alerts.night_is_late"


@pytest.mark.parametrize("state", ["running", "failed"])
def test_the_late_callback_alerts_a_running_night_once_and_a_finished_one_never(aws_server, monkeypatch, state):
    """What the triggerer runs when the scheduler finds the deadline passed: the notifiers' async
    path (aiobotocore, hence moto's server). Airflow 3.3.2 keeps a failed run's deadline."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="fruitflow-oncall")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)
    monkeypatch.setenv("FRUITFLOW_ALERT_SNS_TOPIC_ARN", topic)
    context = {  # as Deadline.handle_miss builds it
        "dag_run": {"dag_id": "fruits_features", "dag_run_id": "scheduled__2026-12-06T02:00:00+00:00",
                    "queued_at": "2026-12-06T02:00:04+00:00", "state": state},
        "deadline": {"id": "0193", "deadline_time": "2026-12-06T06:00:04+00:00"},
    }  # fmt: skip

    asyncio.run(night_is_late(context, late_after_seconds=4 * 3600))

    received = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue_url).get("Messages", [])]
    if state == "failed":
        assert received == []
        return
    (alert,) = received
    assert alert["Subject"] == "fruitflow LATE: run scheduled__2026-12-06T02:00:00+00:00 not finished after 4h"
    assert alert["Message"].splitlines()[0] == (
        "fruitflow run scheduled__2026-12-06T02:00:00+00:00 (DAG fruits_features) was queued at "
        "2026-12-06T02:00:04+00:00 and has not finished by 2026-12-06T06:00:04+00:00 (FRUITFLOW_ALERT_LATE_AFTER=4h)."
    )
