"""The real DAG on the EMR target against moto's S3 and EMR, run with ``dag.test()``.

moto accepts EMR steps but never runs them: ``FakeEmr`` plays the cluster's part, settling
each step as the scenario says and, for a completed step, writing the files its Spark job
would have written. These tests are the control plane's own: the requests, lost responses,
retries, deferred watchers, runs in the same second. Where the steps' real outputs matter
(a failed step's log and report, nights that carry rows over), the rehearsal runs them for
real (test_rehearsal.py). This is a moto run, not an AWS run.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from fruitflow.contract import (
    ExplainedVariance,
    ExportCsvArguments,
    ExportCsvMetrics,
    FeaturesIdentity,
    FeaturizeArguments,
    FeaturizeMetrics,
    PcaArguments,
    PcaMetrics,
)
from fruitflow_pipeline.steps import PIPELINE
from rehearsal.buckets import create_bucket

BUCKET = "fruits"
JOB_ARGUMENTS = {arguments.job: arguments for arguments in (FeaturizeArguments, PcaArguments, ExportCsvArguments)}
CONF = {"images_uri": f"s3://{BUCKET}/images", "results_uri": f"s3://{BUCKET}/results", "weights": "random"}


def argument(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


class FakeEmr:
    """Settles steps in order: all complete, or ``fail_step`` fails and the later ones are
    cancelled (what ActionOnFailure=CANCEL_AND_WAIT does on EMR).

    By default the steps settle as soon as they are added. With ``settle_on_add=False`` they
    stay PENDING until ``settle_next()`` is called, one step at a time.
    """

    def __init__(self, monkeypatch, fail_step: str | None = None, csv_rows_short_by: int = 0, settle_on_add=True):
        from moto.emr import models

        self.fail_step = fail_step
        self.csv_rows_short_by = csv_rows_short_by
        self.s3 = boto3.client("s3")
        self.unsettled = []
        original = models.Cluster.add_steps

        def add_steps(cluster, steps):
            added = original(cluster, steps)
            self.unsettled += added
            while settle_on_add and self.unsettled:
                self.settle_next()
            return added

        monkeypatch.setattr(models.Cluster, "add_steps", add_steps)

    def put(self, uri: str, body: str) -> None:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body.encode())

    def settle_next(self) -> None:
        step = self.unsettled.pop(0)
        if step.name != self.fail_step:
            self.write_outputs(step.name, step.args)
            step.state = "COMPLETED"
            return
        step.state = "FAILED"
        step.Status = {
            "State": "FAILED",
            "StateChangeReason": {},
            "FailureDetails": {
                "Reason": "Unknown error.",
                "Message": f"Exception in thread main: {step.name}: error: images folder does not exist",
                "LogFile": f"s3://{BUCKET}/results/_emr_logs/steps/stderr.gz",
            },
        }
        for later in self.unsettled:
            later.state = "CANCELLED"
        self.unsettled.clear()

    def write_outputs(self, name: str, args: list[str]) -> None:
        """What the step's job writes, at the paths its parser (the contract's, each job's ARGUMENTS:
        tests/test_contract.py) reads from the step's arguments. The contract needs no Spark nor numpy,
        so this also runs where only the Airflow side is installed (tests/test_lean_install.py)."""
        job_args = JOB_ARGUMENTS[name].parse(args[args.index("--py-files") + 3 :])
        if name == "featurize":
            metrics = FeaturizeMetrics(
                images=20, featurised=19, errors=1, model_rows=20, reused=0, new=20, changed=0, removed=0,
                weights=job_args.weights, engine=job_args.engine,
            )  # fmt: skip
            identity = FeaturesIdentity(engine=job_args.engine, weights_digest="d1", preprocessing="p1")
            self.put(f"{job_args.output}/_model.json", identity.to_json())
        elif name == "pca":
            explained = ExplainedVariance(k=3, variance_threshold=job_args.variance, explained_variance=0.96,
                                          explained_variance_ratio=[0.5, 0.3, 0.16, 0.04],
                                          cumulative_explained_variance_ratio=[0.5, 0.8, 0.96, 1.0])  # fmt: skip
            self.put(job_args.explained_variance, explained.to_json())
            metrics = PcaMetrics(images=19, k=3, variance=0.96)
        else:
            rows = ["path,label,pc_1,pc_2,pc_3"]
            rows += [f"s3://{BUCKET}/images/Kiwi/{i}.jpg,Kiwi,0.1,0.2,0.3" for i in range(19 - self.csv_rows_short_by)]
            self.put(job_args.output, "\n".join(rows) + "\n")
            metrics = ExportCsvMetrics(rows=19, components=3)
        self.put(job_args.metrics, metrics.timed(12.5).to_json())


def emr_dag_with_images(load_dag, **settings: str):
    s3 = boto3.client("s3")
    create_bucket(s3, BUCKET, os.environ["AWS_DEFAULT_REGION"])
    for index in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"images/Kiwi/{index}.jpg", Body=b"\xff\xd8 not decoded here")
    return load_dag("emr", poke_interval_seconds="0.1", **settings)


@pytest.fixture
def emr_dag(load_dag, aws, airflow_db):
    return emr_dag_with_images(load_dag)


@pytest.fixture
def deferrable_emr_dag(load_dag, aws_server, airflow_db, monkeypatch):
    """The DAG as a deployment with a triggerer runs it: the step sensors defer."""
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    return emr_dag_with_images(load_dag)


def task_states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def clusters() -> list[dict]:
    emr = boto3.client("emr")
    return [emr.describe_cluster(ClusterId=c["Id"])["Cluster"] for c in emr.list_clusters()["Clusters"]]


def run_key_of(run) -> str:
    return run.get_task_instance("validate_params").xcom_pull(task_ids="validate_params")["run"]["key"]


def calls_named(calls, operation) -> list[dict]:
    return [params for name, params in calls if name == operation]


def read_json(key: str) -> dict:
    return json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_completed_steps_finish_the_run_and_terminate_the_cluster(emr_dag, monkeypatch, aws_calls, capfd):
    FakeEmr(monkeypatch)
    run = emr_dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    assert set(task_states(run).values()) == {"success"}

    plan = run.get_task_instance("validate_params").xcom_pull(task_ids="validate_params")
    code_uri = f"s3://{BUCKET}/results/_code/{plan['run']['code_version']}"
    run_uri = f"s3://{BUCKET}/results/{plan['run']['key']}"
    code_prefix = code_uri.removeprefix(f"s3://{BUCKET}/") + "/"
    code_puts = [
        (index, params["Key"].removeprefix(code_prefix))
        for index, (name, params) in enumerate(aws_calls)
        if name == "PutObject" and params["Key"].startswith(code_prefix)
    ]
    assert {key for _, key in code_puts} == {
        "fruitflow.zip", "featurize.py", "pca.py", "export_csv.py", "bootstrap.sh", "requirements.txt",
        "constraints.txt", "requirements-lean.txt", "constraints-lean.txt",
    }  # fmt: skip
    operations = [name for name, _ in aws_calls]
    assert max(index for index, _ in code_puts) < operations.index("RunJobFlow")  # the code is there before the cluster

    (request,) = calls_named(aws_calls, "RunJobFlow")
    assert request["ReleaseLabel"] == "emr-7.10.0"
    assert request["LogUri"] == f"s3://{BUCKET}/results/_emr_logs/"
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 600}  # two 0.1 s pokes + 10 min: idle_timeout_for
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": f"{code_uri}/bootstrap.sh",
        "Args": [code_uri, "/usr/bin/python3.11", "onnx"],
    }
    assert {"Key": "fruitflow-run", "Value": plan["run"]["key"]} in request["Tags"]

    (added,) = calls_named(aws_calls, "AddJobFlowSteps")
    assert [step["Name"] for step in added["Steps"]] == ["featurize", "pca", "export_csv"]
    assert {step["ActionOnFailure"] for step in added["Steps"]} == {"CANCEL_AND_WAIT"}
    featurize_args = added["Steps"][0]["HadoopJarStep"]["Args"]
    assert argument(featurize_args, "--images") == f"s3://{BUCKET}/images"
    assert argument(featurize_args, "--output") == f"{run_uri}/features"
    assert argument(featurize_args, "--weights") == "random"
    assert argument(featurize_args, "--partitions") == "64"  # 16 task slots x 4, not YARN's parallelism at start
    assert argument(featurize_args, "--engine") == "onnx"
    assert argument(featurize_args, "--model-cache") == f"s3://{BUCKET}/results/_models"  # shared by every run
    defaults = next(c for c in request["Configurations"] if c["Classification"] == "spark-defaults")["Properties"]
    assert (defaults["spark.executor.cores"], defaults["spark.executor.memoryOverhead"]) == ("4", "2644m")
    assert argument(added["Steps"][1]["HadoopJarStep"]["Args"], "--variance") == "0.95"
    assert argument(added["Steps"][2]["HadoopJarStep"]["Args"], "--output") == f"{run_uri}/pca_features.csv"

    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    assert cluster["ReleaseLabel"] == "emr-7.10.0"

    report = read_json(f"results/{plan['run']['key']}/report.json")
    plan_line = "2 nodes x 2 executors x 4 cores = 16 task slots with 2.6 GB Python memory and 9.4 GB heap per executor"
    assert report["executor_plan"] == plan_line
    assert f"executor plan: {plan_line}" in capfd.readouterr().out  # create_cluster's log
    assert report["status"] == "succeeded"
    assert report["cluster_id"] == cluster["Id"]
    assert report["counts"] == {
        "images": 20, "featurised": 19, "errors": 1, "error_share": 0.05, "csv_rows": 19,
        "reused": 0, "new": 20, "changed": 0, "removed": 0, "through_network": 20,
    }  # fmt: skip
    assert report["pca"]["k"] == 3


def test_outputs_that_do_not_add_up_fail_the_check_and_still_terminate(emr_dag, monkeypatch):
    FakeEmr(monkeypatch, csv_rows_short_by=2)
    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed"
    states = task_states(run)
    assert states["check_outputs"] == "failed" and states["terminate_cluster"] == "success"
    assert clusters()[0]["Status"]["State"] == "TERMINATED"
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert report["status"] == "failed"
    assert report["problems"] == ["the CSV has 17 rows but 19 images were featurised"]


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"variance": 1.5}, "variance"),
        ({"images_uri": "/home/me/fruits"}, "images_uri"),
        ({"results_uri": "https://example.com/out"}, "results_uri"),
        ({"core_instance_count": -1}, "core_instance_count"),
        ({"task_market": "CHEAP"}, "task_market"),
        ({"core_instance_type": "x9.huge"}, "core_instance_type"),
        ({"weights": "mobilenet.bin"}, "weights"),
    ],
)
def test_a_bad_param_is_refused_before_any_cluster_exists(emr_dag, aws_calls, conf, field):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}"):
        emr_dag.test(run_conf=CONF | conf)
    assert not calls_named(aws_calls, "RunJobFlow")
    assert clusters() == []


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"images_uri": f"s3://{BUCKET}/no-such-folder"},
            "no .jpg, .jpeg, .png files under s3://fruits/no-such-folder",
        ),
        ({"images_uri": f"s3://{BUCKET}/docs"}, "no .jpg, .jpeg, .png files under s3://fruits/docs, 2 other file(s)"),
        ({"foo": 1}, "conf: unknown key(s) foo; the params are images_uri, results_uri, variance"),
        (
            {"core_instance_type": "c5.4xlarge", "batch_size": 64},
            "cluster: c5.4xlarge has 1536 MB of YARN memory per vCPU",
        ),
    ],
)
def test_params_that_pass_the_form_but_not_the_world_start_no_cluster_and_claim_no_folder(
    emr_dag, aws_calls, capfd, conf, message
):
    s3 = boto3.client("s3")
    for name in ("docs/readme.txt", "docs/Kiwi/notes.txt"):
        s3.put_object(Bucket=BUCKET, Key=name, Body=b"not an image")
    run = emr_dag.test(run_conf=CONF | conf)
    assert run.state == "failed"
    states = task_states(run)
    assert states["validate_params"] == "failed"
    assert states["create_cluster"] == "upstream_failed"
    assert states["write_report"] in ("skipped", "upstream_failed", None)  # refused runs leave no folder
    assert message in capfd.readouterr().out
    assert not calls_named(aws_calls, "RunJobFlow")
    assert clusters() == []
    assert not [key for key in s3_keys("results/") if not key.startswith("results/_code/")]


def s3_keys(prefix: str) -> list[str]:
    return [
        item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    ]


def test_two_runs_in_the_same_second_keep_both_outputs(emr_dag, monkeypatch):
    FakeEmr(monkeypatch)
    first = emr_dag.test(logical_date=datetime(2026, 11, 26, 8, 50, 43, 100000, tzinfo=UTC), run_conf=CONF)
    # Triggered by hand with full_refresh: the same images would otherwise leave it nothing to do.
    again = CONF | {"full_refresh": True}
    second = emr_dag.test(logical_date=datetime(2026, 11, 26, 8, 50, 43, 300000, tzinfo=UTC), run_conf=again)

    assert first.state == second.state == "success"
    assert (run_key_of(first), run_key_of(second)) == ("20261126T085043Z", "20261126T085043Z-300000")
    for run in (first, second):
        folder = f"results/{run_key_of(run)}"
        assert read_json(f"{folder}/_dag_run.json")["dag_run_id"] == run.run_id
        assert read_json(f"{folder}/report.json")["run"] == run_key_of(run)
        assert {f"{folder}/pca_features.csv", f"{folder}/metrics/featurize.json"} <= set(s3_keys(folder))
    tags = [{t["Key"]: t["Value"] for t in cluster["Tags"]} for cluster in clusters()]
    assert sorted(t["fruitflow-run"] for t in tags) == ["20261126T085043Z", "20261126T085043Z-300000"]


def start_cluster(dag_run_id: str, key: str) -> str:
    """A live cluster as create_cluster starts it, as far as finding it again goes: name and tags."""
    from fruitflow_pipeline.cluster import dag_run_tag

    return boto3.client("emr").run_job_flow(
        Name=f"fruitflow-{key}",
        ReleaseLabel="emr-7.10.0",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole_V2",
        Tags=[{"Key": "airflow-dag-run-id", "Value": dag_run_tag(dag_run_id)}],
    )["JobFlowId"]


def cluster_state(cluster_id: str) -> str:
    return boto3.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]


def test_a_retried_create_cluster_leaves_the_run_one_live_cluster(emr_dag, monkeypatch, aws_calls):
    """The first RunJobFlow reaches EMR but its response is lost; Airflow retries create_cluster."""
    from botocore.client import BaseClient
    from botocore.exceptions import ReadTimeoutError

    FakeEmr(monkeypatch)
    other_run = start_cluster("scheduled__2026-11-25T02:00:00+00:00", "20261125T020000Z")
    recorded_call = BaseClient._make_api_call  # aws_calls' recorder: every call still lands in aws_calls
    lost = []

    def lose_the_first_response(client, operation, params):
        response = recorded_call(client, operation, params)
        if operation == "RunJobFlow" and not lost:
            lost.append(response["JobFlowId"])
            raise ReadTimeoutError(endpoint_url="https://elasticmapreduce.eu-west-1.amazonaws.com/")
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", lose_the_first_response)
    emr_dag.get_task("create_cluster").retry_delay = timedelta(0)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    (orphan,) = lost
    (added,) = calls_named(aws_calls, "AddJobFlowSteps")
    creates = [
        params for params in calls_named(aws_calls, "RunJobFlow") if params["Name"] != "fruitflow-20261125T020000Z"
    ]
    assert len(creates) == 2 and added["JobFlowId"] not in (orphan, other_run)
    terminations = [set(params["JobFlowIds"]) for params in calls_named(aws_calls, "TerminateJobFlows")]
    assert terminations == [{orphan}, {added["JobFlowId"]}]  # the orphan went before the second cluster came
    assert cluster_state(orphan) == cluster_state(added["JobFlowId"]) == "TERMINATED"
    assert cluster_state(other_run) == "WAITING"  # another run's cluster is left alone


def test_a_run_that_ends_failed_without_its_teardown_has_its_clusters_terminated(aws, monkeypatch):
    """What Airflow does when a run ends failed, in the scheduler, or in the API server for a run
    marked failed from the UI: it calls the listeners, among them fruitflow's cleanup plugin."""
    from types import SimpleNamespace

    from airflow.listeners.listener import get_listener_manager

    monkeypatch.setenv("FRUITFLOW_TARGET", "emr")
    run_id = "manual__2026-11-26T08:50:43.100000+00:00"
    this_run, other_run = start_cluster(run_id, "20261126T085043Z"), start_cluster("manual__other", "20261126T085044Z")
    failed_run = SimpleNamespace(dag_id="fruits_features", run_id=run_id)

    get_listener_manager().hook.on_dag_run_failed(
        dag_run=failed_run, msg="Dag Run's state was manually set to `failed`."
    )

    assert cluster_state(this_run) == "TERMINATED"
    assert cluster_state(other_run) == "WAITING"
    other_dag = SimpleNamespace(dag_id="some_other_dag", run_id="manual__other")
    get_listener_manager().hook.on_dag_run_failed(dag_run=other_dag, msg="failed")
    assert cluster_state(other_run) == "WAITING"


def record_triggers(monkeypatch, fake_emr: FakeEmr) -> list:
    """The triggers dag.test() runs in line, as a triggerer would, in order; each step
    sensor's trigger starts while its step is still pending and sees the step settle."""
    from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger
    from airflow.sdk.definitions import dag as dag_module

    triggers = []
    run_inline = dag_module._run_inline_trigger

    def record(trigger, ti):
        triggers.append(trigger)
        if isinstance(trigger, EmrStepSensorTrigger):
            fake_emr.settle_next()
        return run_inline(trigger, ti)

    monkeypatch.setattr(dag_module, "_run_inline_trigger", record)
    return triggers


@pytest.mark.parametrize("fail_step", [None, "pca"])
def test_deferred_watchers_wait_in_the_triggerer_and_end_the_run_like_poking_ones(
    deferrable_emr_dag, monkeypatch, capfd, fail_step
):
    """With a triggerer the sensors defer; their triggers poll moto over HTTP with aiobotocore."""
    from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger

    assert all(deferrable_emr_dag.get_task(f"watch_{step.name}").deferrable for step in PIPELINE)
    assert not deferrable_emr_dag.get_task("add_steps").deferrable  # or it would wait for every step
    triggers = record_triggers(monkeypatch, FakeEmr(monkeypatch, fail_step=fail_step, settle_on_add=False))

    run = deferrable_emr_dag.test(run_conf=CONF)

    states = task_states(run)
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    assert states["terminate_cluster"] == "success"
    step_triggers = [
        trigger.serialized_fields["step_id"] for trigger in triggers if isinstance(trigger, EmrStepSensorTrigger)
    ]
    step_ids = {s["Name"]: s["Id"] for s in boto3.client("emr").list_steps(ClusterId=cluster["Id"])["Steps"]}
    if fail_step is None:
        assert run.state == "success", states
        assert step_triggers == [step_ids[step.name] for step in PIPELINE]
    else:
        assert run.state == "failed"
        assert states["watch_featurize"] == "success" and states["watch_pca"] == "failed"
        assert states["watch_export_csv"] == states["check_outputs"] == "upstream_failed"
        assert step_triggers == [step_ids["featurize"], step_ids["pca"]]
        log = capfd.readouterr().out
        assert "step pca" in log and "ended FAILED" in log
        assert f"s3://{BUCKET}/results/_emr_logs/{cluster['Id']}/steps/" in log


def test_a_good_run_deletes_the_runs_beyond_the_newest_good_ones_and_reports_what_it_wrote(
    load_dag, aws, airflow_db, monkeypatch
):
    emr_dag = emr_dag_with_images(load_dag, keep_runs="1")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="results/exports/kiwis.csv", Body=b"someone else's file")
    FakeEmr(monkeypatch)
    first = emr_dag.test(logical_date=datetime(2026, 11, 26, 2, tzinfo=UTC), run_conf=CONF)
    s3.put_object(Bucket=BUCKET, Key="images/Kiwi/new.jpg", Body=b"\xff\xd8 another")
    second = emr_dag.test(logical_date=datetime(2026, 11, 27, 2, tzinfo=UTC), run_conf=CONF)

    assert first.state == second.state == "success", task_states(second)
    assert s3_keys("results/20261126T020000Z/") == []
    assert "results/exports/kiwis.csv" in s3_keys("results/exports/")
    assert s3_keys("results/_code/") and s3_keys("results/20261127T020000Z/")
    assert read_json("results/latest.json")["run_key"] == "20261127T020000Z"

    first_report = read_json("results/20261127T020000Z/report.json")
    (deleted,) = first_report["retention"]["deleted"]
    assert deleted["run"] == "20261126T020000Z" and deleted["bytes"] > 0
    assert first_report["retention"]["deleted_bytes"] == deleted["bytes"]
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="results/20261127T020000Z/")["Contents"]
    written = sum(item["Size"] for item in listed if not item["Key"].endswith(("/report.json", "/report.html")))
    assert first_report["bytes_written"] == written


def fill_in_emr_timelines(monkeypatch) -> None:
    """What moto leaves out of EMR's answers, as EMR gives it after a night: the cluster created at
    02:00, ready at 02:09 and ended at 02:45, its nodes launched by 02:02, the steps from 02:10 to
    02:40, and the normalized instance hours."""
    from botocore.client import BaseClient

    start = datetime(2026, 11, 25, 2, tzinfo=UTC)
    original = BaseClient._make_api_call

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    def answer(client, operation, params):
        response = original(client, operation, params)
        if operation == "DescribeCluster" and response["Cluster"]["Status"]["State"] == "TERMINATED":
            response["Cluster"]["Status"]["Timeline"] = {"CreationDateTime": at(0), "ReadyDateTime": at(9),
                                                         "EndDateTime": at(45)}  # fmt: skip
            response["Cluster"]["NormalizedInstanceHours"] = 24
        elif operation == "ListInstances":
            for instance in response["Instances"]:
                launched = at(1 if instance["InstanceType"] == "m5.xlarge" else 2)
                instance["Status"]["Timeline"] = {"CreationDateTime": launched, "EndDateTime": at(45)}
        elif operation == "ListSteps":
            for step, (begin, end) in zip(response["Steps"], [(36, 40), (30, 36), (10, 30)], strict=False):
                step["Status"]["Timeline"] = {"StartDateTime": at(begin), "EndDateTime": at(end)}  # newest first
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", answer)


def test_the_report_says_where_the_cluster_time_went_and_what_it_cost(
    load_dag, aws, airflow_db, monkeypatch, capfd, features_asset_events
):
    prices = '{"m5.xlarge": 0.24, "m5.2xlarge": 0.48}'
    emr_dag = emr_dag_with_images(load_dag, emr_hourly_prices=prices)
    FakeEmr(monkeypatch)
    fill_in_emr_timelines(monkeypatch)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    usage = read_json(f"results/{run_key_of(run)}/report.json")["cluster"]
    assert usage["state"] == "TERMINATED"
    assert usage["phases_seconds"] == {
        "provisioning": 120.0, "bootstrap": 420.0, "steps": 1800.0, "after_steps": 300.0, "total": 2700.0,
    }  # fmt: skip
    assert usage["instance_seconds"] == {"m5.2xlarge:ON_DEMAND": 2 * 43 * 60.0, "m5.xlarge:ON_DEMAND": 44 * 60.0}
    assert usage["normalized_instance_hours"] == 24
    assert usage["estimated_cost"]["total"] == round(86 / 60 * 0.48 + 44 / 60 * 0.24, 4)
    log = capfd.readouterr().out
    assert f"cluster {usage['id']} TERMINATED: provisioning 120 s, bootstrap 420 s, steps 1800 s" in log
    assert f"estimated cost: {usage['estimated_cost']['total']:.2f} (FRUITFLOW_EMR_HOURLY_PRICES)" in log
    page = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"results/{run_key_of(run)}/report.html")
    html = page["Body"].read().decode()
    assert f"Estimated cost: <b>{usage['estimated_cost']['total']:.2f}</b>" in html
    assert html.count('src="data:image/png;base64,') == 0  # the fake steps drew no pictures: said so
    assert "explained variance by number of components: not drawn by this run." in html
    # The features asset's event, emitted after the cluster's end, carries the same cluster time.
    event = features_asset_events()[-1]
    assert (event["run"], event["cluster"]) == (run_key_of(run), usage)
    assert event["seconds"] == read_json(f"results/{run_key_of(run)}/report.json")["seconds"]
