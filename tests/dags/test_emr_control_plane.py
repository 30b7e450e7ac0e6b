"""The real DAG on the EMR target against moto's S3 and EMR, run with ``dag.test()``.

moto accepts EMR steps but never runs them: ``FakeEmr`` plays the cluster's part, settling
each step as the scenario says and, for a completed step, writing the files its Spark job
would have written. These tests are the control plane's own: the requests, lost responses,
retries, deferred watchers, runs in the same second. Where the steps' real outputs matter
(a failed step's log and report, nights that carry rows over), the rehearsal runs them for
real (test_rehearsal.py). This is a moto run, not an AWS run.
"""

from __future__ import annotations

import gzip
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


# A failed featurize step's stdout.gz as a PySpark driver leaves it: Spark's PythonRunner copies the
# job's own output and traceback there (the rehearsal's failing step shows the same layout).
FAILED_STDOUT = """\
converting MobileNetV2 to ONNX
Traceback (most recent call last):
  File "/mnt/tmp/spark/featurize.py", line 12, in <module>
    sys.exit(main())
  File "/mnt/tmp/spark/fruitflow.zip/fruitflow/featurize.py", line 301, in main
    model = load_model(args.weights)
  File "/mnt/tmp/spark/fruitflow.zip/fruitflow/featurize.py", line 120, in load_model
    raise WeightsError(f"weights {uri} are not MobileNetV2 weights: {problem}")
fruitflow.featurize.WeightsError: weights s3://fruits/weights/broken.h5 are not MobileNetV2 weights: bad HDF5
"""
FAILED_STDERR = "26/12/06 02:14:03 INFO SparkContext: Successfully stopped SparkContext\n"
JOB_ERROR = (
    "fruitflow.featurize.WeightsError: weights s3://fruits/weights/broken.h5 are not MobileNetV2 weights: bad HDF5"
)


class FakeEmr:
    """Settles steps in order: all complete, or ``fail_step`` fails and the later ones are
    cancelled (what ActionOnFailure=CANCEL_AND_WAIT does on EMR); the failed step's stdout.gz and
    stderr.gz are in its log folder, unless ``step_logs=False`` (EMR has not copied them yet).

    By default the steps settle as soon as they are added. With ``settle_on_add=False`` they
    stay PENDING until ``settle_next()`` is called, one step at a time.
    """

    def __init__(
        self, monkeypatch, fail_step: str | None = None, csv_rows_short_by: int = 0, settle_on_add=True, step_logs=True
    ):
        from moto.emr import models

        self.fail_step = fail_step
        self.csv_rows_short_by = csv_rows_short_by
        self.step_logs = step_logs
        self.s3 = boto3.client("s3")
        self.unsettled = []
        self.cluster_of = {}
        original = models.Cluster.add_steps

        def add_steps(cluster, steps):
            added = original(cluster, steps)
            self.cluster_of |= {step.id: cluster.id for step in added}
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
        if self.step_logs:
            folder = f"results/_emr_logs/{self.cluster_of[step.id]}/steps/{step.id}"
            for name, text in (("stdout", FAILED_STDOUT), ("stderr", FAILED_STDERR)):
                self.s3.put_object(Bucket=BUCKET, Key=f"{folder}/{name}.gz", Body=gzip.compress(text.encode()))

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
            rows = [f"s3://{BUCKET}/images/Kiwi/{i}.jpg,Kiwi,0.1,0.2,0.3" for i in range(19 - self.csv_rows_short_by)]
            body = "\n".join(["path,label,pc_1,pc_2,pc_3", *rows]) + "\n"
            self.put(job_args.output, body)
            metrics = ExportCsvMetrics(rows=len(rows), components=3, bytes=len(body.encode()))
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
    assert argument(featurize_args, "--partitions") == "16"  # 4 task slots x 4, not YARN's parallelism at start
    # Three images: a single node of the core type runs the driver and one executor (sized to the night).
    groups = request["Instances"]["InstanceGroups"]
    assert [(group["InstanceRole"], group["InstanceType"], group["InstanceCount"]) for group in groups] == [
        ("MASTER", "m5.2xlarge", 1)
    ]
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
    plan_line = "1 node x 1 executor x 4 cores = 4 task slots with 2.6 GB Python memory and 9.4 GB heap per executor"
    assert report["executor_plan"] == plan_line
    log = capfd.readouterr().out
    assert f"executor plan: {plan_line}" in log  # create_cluster's log
    size = report["cluster_size"]
    assert (size["core_nodes"], size["chosen"], size["images"], size["task_slots"]) == (0, "sized", 3, 4)
    assert size["images_why"] == "no earlier good run: all 3 images"
    assert size["why"].startswith("a single-node cluster: 3 images take 0.0 min on 4 task slots, the fewest nodes")
    assert f"cluster: {size['why']}" in log  # size_cluster's log
    assert report["status"] == "succeeded"
    assert report["cluster_id"] == cluster["Id"]
    assert report["counts"] == {
        "images": 20, "featurised": 19, "errors": 1, "error_share": 0.05, "pca_rows": 19, "csv_rows": 19,
        "reused": 0, "new": 20, "changed": 0, "removed": 0, "through_network": 20,
    }  # fmt: skip
    assert report["pca"]["k"] == 3
    # The checks read the CSV's first bytes only, in one ranged GET: its rows never reach the worker.
    csv_key = f"results/{plan['run']['key']}/pca_features.csv"
    csv_reads = [params.get("Range") for params in calls_named(aws_calls, "GetObject") if params["Key"] == csv_key]
    assert csv_reads == ["bytes=0-65535"]


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
    # report.json names every cluster this run started, the orphan too, and how each ended.
    reported = read_json(f"results/{run_key_of(run)}/report.json")["clusters"]
    assert {(c["id"], c["state"]) for c in reported} == {(orphan, "TERMINATED"), (added["JobFlowId"], "TERMINATED")}


def test_a_run_that_ends_failed_without_its_teardown_has_its_clusters_terminated(aws, monkeypatch):
    """What Airflow does when a run ends failed, in the scheduler, or in the API server for a run
    marked failed from the UI: it calls the listeners, among them fruitflow's cleanup plugin. A run
    held by no session (whose tasks cannot be read) is looked for on EMR."""
    from airflow.listeners.listener import get_listener_manager
    from airflow.models.dagrun import DagRun

    monkeypatch.setenv("FRUITFLOW_TARGET", "emr")
    run_id = "manual__2026-11-26T08:50:43.100000+00:00"
    this_run, other_run = start_cluster(run_id, "20261126T085043Z"), start_cluster("manual__other", "20261126T085044Z")
    failed_run = DagRun(dag_id="fruits_features", run_id=run_id)

    get_listener_manager().hook.on_dag_run_failed(
        dag_run=failed_run, msg="Dag Run's state was manually set to `failed`."
    )

    assert cluster_state(this_run) == "TERMINATED"
    assert cluster_state(other_run) == "WAITING"
    other_dag = DagRun(dag_id="some_other_dag", run_id="manual__other")
    get_listener_manager().hook.on_dag_run_failed(dag_run=other_dag, msg="failed")
    assert cluster_state(other_run) == "WAITING"


def dag_run_in_a_session(session, run_id: str):
    """The DAG run as the scheduler and the API server hand it to listeners: in their session."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    return session.scalar(select(DagRun).where(DagRun.run_id == run_id))


def test_a_run_refused_at_validate_params_costs_the_listener_no_aws_call(emr_dag, aws_calls, monkeypatch):
    from airflow.listeners.listener import get_listener_manager
    from airflow.utils.session import create_session

    monkeypatch.setenv("FRUITFLOW_TARGET", "emr")
    refused = emr_dag.test(run_conf=CONF | {"images_uri": f"s3://{BUCKET}/no-such-folder"})
    assert refused.state == "failed" and task_states(refused)["create_cluster"] == "upstream_failed"
    FakeEmr(monkeypatch, fail_step="featurize")
    started = emr_dag.test(logical_date=datetime(2026, 11, 27, 2, tzinfo=UTC), run_conf=CONF)
    assert started.state == "failed" and task_states(started)["create_cluster"] == "success"

    for run, looks_on_aws in [(refused, False), (started, True)]:
        aws_calls.clear()
        with create_session() as session:
            get_listener_manager().hook.on_dag_run_failed(dag_run=dag_run_in_a_session(session, run.run_id), msg="x")
        assert bool(calls_named(aws_calls, "ListClusters")) is looks_on_aws
        assert looks_on_aws or aws_calls == []


def test_the_listener_bounds_its_aws_calls_and_logs_a_failure_instead_of_raising(aws, monkeypatch, caplog):
    """EMR unreachable: each call gives up after its timeouts and three attempts, and the scheduler
    gets a log line, not an exception."""
    from airflow.listeners.listener import get_listener_manager
    from airflow.models.dagrun import DagRun
    from botocore.client import BaseClient

    monkeypatch.setenv("FRUITFLOW_TARGET", "emr")
    unreachable = {"conn_type": "aws", "extra": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(unreachable))
    limits = []
    original = BaseClient._make_api_call

    def record(client, operation, params):
        config = client.meta.config
        limits.append((operation, config.connect_timeout, config.read_timeout, config.retries))
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    failed_run = DagRun(dag_id="fruits_features", run_id="manual__unreachable")

    get_listener_manager().hook.on_dag_run_failed(dag_run=failed_run, msg="failed")

    assert limits == [("ListClusters", 5, 15, {"total_max_attempts": 3, "mode": "standard"})]
    assert "could not look for clusters of failed DAG run manual__unreachable" in caplog.text


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


def test_weights_rewritten_at_the_same_s3_key_make_the_next_night_run_without_downloading_them(
    load_dag, aws, airflow_db, monkeypatch, aws_calls, capfd
):
    emr_dag = emr_dag_with_images(load_dag)
    s3, weights_key = boto3.client("s3"), "models/mobilenet_v2.h5"
    conf = CONF | {"weights": f"s3://{BUCKET}/{weights_key}"}
    s3.put_object(Bucket=BUCKET, Key=weights_key, Body=b"weights of the first training")
    FakeEmr(monkeypatch)

    def night(day: int):
        return emr_dag.test(logical_date=datetime(2026, 11, day, 2, tzinfo=UTC), run_conf=conf)

    first, same = night(26), night(27)
    s3.put_object(Bucket=BUCKET, Key=weights_key, Body=b"weights retrained, same key")
    retrained = night(28)

    assert first.state == same.state == retrained.state == "success"
    assert task_states(same)["create_cluster"] == "skipped"  # untouched weights: an unchanged night
    assert read_json("results/20261127T020000Z/report.json")["status"] == "unchanged"
    assert task_states(retrained)["create_cluster"] == "success"
    assert len(calls_named(aws_calls, "RunJobFlow")) == 2
    report = read_json("results/20261128T020000Z/report.json")
    reason = f"weights changed since 20261126T020000Z: s3://{BUCKET}/{weights_key} was rewritten"
    assert (report["changes"], report["previous_run"]) == ([reason], "20261126T020000Z")
    assert f"this run goes ahead: {reason}" in capfd.readouterr().out
    assert not [params for params in calls_named(aws_calls, "GetObject") if params["Key"] == weights_key]
    latest = read_json("results/latest.json")
    etag = s3.head_object(Bucket=BUCKET, Key=weights_key)["ETag"].strip('"')
    assert (latest["run_key"], latest["weights_fingerprint"]) == ("20261128T020000Z", f"etag:{etag} bytes:27")


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

    run = emr_dag.test(run_conf={**CONF, "core_instance_count": 2})  # the trigger's count wins

    assert run.state == "success", task_states(run)
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert (report["cluster_size"]["core_nodes"], report["cluster_size"]["chosen"]) == (2, "explicit")
    usage = report["cluster"]
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


# On call: the alerts, through moto's SNS to an SQS queue subscribed to the topic.


@pytest.fixture
def oncall_topic(aws) -> str:
    """An SNS topic with an SQS queue subscribed, as an on-call pager would be; its ARN."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="fruitflow-oncall")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)
    return topic


def alerts_received() -> list[dict]:
    """The SNS notifications the on-call queue holds (Subject, Message, ...), oldest first; read once."""
    sqs = boto3.client("sqs")
    queue_url = sqs.get_queue_url(QueueName="oncall")["QueueUrl"]
    received = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        received += [json.loads(message["Body"]) for message in batch]
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(received, key=lambda notification: notification["Timestamp"])


def test_a_failed_step_night_sends_one_alert_with_the_jobs_error_line(
    load_dag, airflow_db, oncall_topic, monkeypatch, capfd
):
    emr_dag = emr_dag_with_images(load_dag, alert_sns_topic_arn=oncall_topic)
    FakeEmr(monkeypatch, fail_step="featurize")

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed"
    (cluster,) = clusters()
    step_ids = {s["Name"]: s["Id"] for s in boto3.client("emr").list_steps(ClusterId=cluster["Id"])["Steps"]}
    folder = f"s3://{BUCKET}/results/_emr_logs/{cluster['Id']}/steps/{step_ids['featurize']}/"
    log = capfd.readouterr().out
    assert f"the job's error: {JOB_ERROR}" in log  # the watcher's task log, without opening S3
    assert 'raise WeightsError(f"weights {uri} are not MobileNetV2 weights: {problem}")' in log  # traceback tail

    key = run_key_of(run)
    report = read_json(f"results/{key}/report.json")
    assert (report["failed_task"], report["error_line"], report["step_logs"]) == ("watch_featurize", JOB_ERROR, folder)
    assert f"job error: {JOB_ERROR}" in report["error"]
    assert [(c["id"], c["state"]) for c in report["clusters"]] == [(cluster["Id"], "TERMINATED")]
    assert "stdout.gz" in report["advice"]
    page = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"results/{key}/report.html")["Body"].read().decode()
    assert f"Failed at watch_featurize: {JOB_ERROR}. What to do: read the job" in page
    assert f"Clusters this run started: {cluster['Id']} TERMINATED" in page

    (alert,) = alerts_received()
    assert alert["Subject"].startswith(f"fruitflow FAILED {key}: watch_featurize: fruitflow.featurize.WeightsError")
    assert len(alert["Subject"]) < 100
    lines = alert["Message"].splitlines()
    assert lines[:2] == [f"fruitflow run {key} failed at watch_featurize.", f"Reason: {JOB_ERROR}"]
    assert f"Clusters: {cluster['Id']} (TERMINATED)" in lines
    assert f"Report: s3://{BUCKET}/results/{key}/report.html" in lines
    assert f"Step logs: {folder}" in lines


def test_a_denied_terminate_fails_the_run_and_alerts_with_the_cluster_first(
    load_dag, airflow_db, oncall_topic, monkeypatch
):
    """TerminateJobFlows denied (an IAM policy without elasticmapreduce:TerminateJobFlows): the
    teardown fails, and with it the run; the report is still written and names it."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    emr_dag = emr_dag_with_images(load_dag, alert_sns_topic_arn=oncall_topic)
    emr_dag.get_task("terminate_cluster").retry_delay = timedelta(0)
    FakeEmr(monkeypatch)
    original = BaseClient._make_api_call

    def deny_terminate(client, operation, params):
        if operation == "TerminateJobFlows":
            error = {"Code": "AccessDeniedException", "Message": "not authorized to perform TerminateJobFlows"}
            raise ClientError({"Error": error}, operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", deny_terminate)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed"
    states = task_states(run)
    assert states["terminate_cluster"] == "failed" and states["write_report"] == "success"
    assert states["check_outputs"] == states["remove_old_runs"] == "success"
    (cluster,) = clusters()
    assert cluster["Status"]["State"] in ("RUNNING", "WAITING")  # still up, still costing
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert (report["status"], report["failed_task"]) == ("failed", "terminate_cluster")
    assert "AccessDeniedException" in report["error"]
    assert [(c["id"], c["state"]) for c in report["clusters"]] == [(cluster["Id"], cluster["Status"]["State"])]

    (alert,) = alerts_received()  # the cluster's alert; the outputs were good, so no other
    assert alert["Subject"] == f"fruitflow: EMR cluster {cluster['Id']} may still be running (terminate_cluster failed)"
    first_line = alert["Message"].splitlines()[0]
    assert first_line == f"EMR cluster {cluster['Id']} may still be running: terminate_cluster failed in " \
        f"fruitflow run {run_key_of(run)}."  # fmt: skip
    assert f"aws emr terminate-clusters --cluster-ids {cluster['Id']}" in alert["Message"]
    assert "AccessDeniedException" in alert["Message"]


@pytest.mark.parametrize("on_success", ["false", "true"])
def test_a_good_night_and_an_unchanged_night_send_nothing_unless_asked(
    load_dag, airflow_db, oncall_topic, monkeypatch, on_success
):
    emr_dag = emr_dag_with_images(load_dag, alert_sns_topic_arn=oncall_topic, alert_on_success=on_success)
    FakeEmr(monkeypatch)

    good = emr_dag.test(logical_date=datetime(2026, 11, 26, 2, tzinfo=UTC), run_conf=CONF)
    unchanged = emr_dag.test(logical_date=datetime(2026, 11, 27, 2, tzinfo=UTC), run_conf=CONF)

    assert good.state == unchanged.state == "success"
    assert read_json("results/20261127T020000Z/report.json")["status"] == "unchanged"
    received = [alert["Subject"] for alert in alerts_received()]
    if on_success == "false":
        assert received == []
    else:
        assert received == [
            "fruitflow 20261126T020000Z: 19 of 20 images featurised, 1 errors, k=3",
            "fruitflow 20261127T020000Z: unchanged since 20261126T020000Z, nothing computed",
        ]


@pytest.mark.parametrize("fail_step", [None, "featurize"])
def test_a_publish_that_fails_is_logged_and_leaves_the_run_as_it_was(
    load_dag, airflow_db, aws, monkeypatch, caplog, fail_step
):
    missing_topic = "arn:aws:sns:eu-west-1:123456789012:no-such-topic"
    emr_dag = emr_dag_with_images(load_dag, alert_sns_topic_arn=missing_topic, alert_on_success="true")
    FakeEmr(monkeypatch, fail_step=fail_step)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == ("failed" if fail_step else "success")
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert report["status"] == ("failed" if fail_step else "succeeded")
    not_sent = [record for record in caplog.records if "not sent through SnsNotifier" in record.getMessage()]
    assert len(not_sent) == 1 and "NotFound" in str(not_sent[0].exc_info[1])


def test_step_logs_not_copied_in_time_are_named_and_the_reason_is_emrs(load_dag, airflow_db, aws, monkeypatch, capfd):
    emr_dag = emr_dag_with_images(load_dag, emr_step_log_wait_seconds="0.3")
    FakeEmr(monkeypatch, fail_step="pca", step_logs=False)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed"
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert "no error line in the step's logs after 0 s (EMR copies them to S3 every five minutes)" in report["error"]
    assert report["error_line"] == report["error"][:300]  # EMR's own words, the first line of the error
    assert report["step_logs"].endswith("/steps/" + report["step_logs"].rstrip("/").rsplit("/", 1)[-1] + "/")
    assert f"no error line in {report['step_logs']} after 0 s" in capfd.readouterr().out


def test_a_run_refused_before_its_report_still_alerts_from_the_dag_callback(load_dag, airflow_db, oncall_topic):
    emr_dag = emr_dag_with_images(load_dag, alert_sns_topic_arn=oncall_topic)

    run = emr_dag.test(run_conf=CONF | {"images_uri": f"s3://{BUCKET}/no-such-folder"})

    assert run.state == "failed"
    assert task_states(run)["write_report"] in ("skipped", "upstream_failed", None)
    (alert,) = alerts_received()
    assert alert["Subject"].startswith(f"fruitflow FAILED {run.run_id}: validate_params: the params")
    assert len(alert["Subject"]) == 99 and alert["Subject"].endswith("...")  # cut under SNS's limit
    assert "What to do: a param, the conf or an allowed location is wrong" in alert["Message"]
    assert "Report: none written (the run stopped before it)" in alert["Message"]


class LaunchFailures:
    """The first ``failing`` clusters end TERMINATED_WITH_ERRORS in bootstrap with EMR's reason
    ``code``/``message`` (moto starts every cluster WAITING, and its reasons carry no code)."""

    def __init__(self, monkeypatch, code: str, message: str, failing: int = 1):
        from moto.emr import models

        self.failed: list[str] = []
        original_bootstrap, original_status = models.Cluster.run_bootstrap_actions, models.Cluster.status
        failures = self

        def run_bootstrap_actions(cluster):
            if len(failures.failed) >= failing:
                return original_bootstrap(cluster)
            failures.failed.append(cluster.id)
            cluster.state = "TERMINATED_WITH_ERRORS"
            cluster.end_datetime = cluster.creation_datetime
            cluster.last_state_change_reason = message
            cluster.fruitflow_reason_code = code

        def status(cluster):
            answer = original_status.fget(cluster)
            if code := getattr(cluster, "fruitflow_reason_code", None):
                answer["StateChangeReason"]["Code"] = code
            return answer

        monkeypatch.setattr(models.Cluster, "run_bootstrap_actions", run_bootstrap_actions)
        monkeypatch.setattr(models.Cluster, "status", property(status))


INTERNAL_ERROR = "Amazon EMR could not provision EC2 capacity: insufficient capacity for m5.2xlarge in eu-west-1a"


def test_a_cluster_that_dies_in_bootstrap_for_a_transient_reason_is_replaced_and_the_night_succeeds(
    emr_dag, monkeypatch, aws_calls, capfd, features_asset_events
):
    FakeEmr(monkeypatch)
    failures = LaunchFailures(monkeypatch, "INTERNAL_ERROR", INTERNAL_ERROR)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    (first,) = failures.failed
    (added,) = calls_named(aws_calls, "AddJobFlowSteps")
    second = added["JobFlowId"]
    assert len(calls_named(aws_calls, "RunJobFlow")) == 2 and second != first
    operations = [name for name, _ in aws_calls]
    assert operations.index("AddJobFlowSteps") > max(i for i, name in enumerate(operations) if name == "RunJobFlow")
    assert cluster_state(first) == "TERMINATED_WITH_ERRORS" and cluster_state(second) == "TERMINATED"
    log = capfd.readouterr().out
    assert f"cluster {first} ended TERMINATED_WITH_ERRORS before it was ready (INTERNAL_ERROR: {INTERNAL_ERROR})" in log
    assert "launching cluster 2 of at most 2" in log
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert report["cluster_id"] == report["cluster"]["id"] == second
    assert [(c["id"], c["state"], c["reason_code"]) for c in report["clusters"]] == [
        (first, "TERMINATED_WITH_ERRORS", "INTERNAL_ERROR"),
        (second, "TERMINATED", None),
    ]
    assert all("instance_seconds" in cluster for cluster in report["clusters"])
    assert features_asset_events()[-1]["clusters"] == report["clusters"]
    html = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"results/{run_key_of(run)}/report.html")
    page = html["Body"].read().decode()
    assert "Clusters this run started" in page and f"INTERNAL_ERROR: {INTERNAL_ERROR}" in page


def test_a_cluster_refused_for_its_permissions_fails_create_cluster_at_once_with_the_reason(
    emr_dag, monkeypatch, aws_calls
):
    FakeEmr(monkeypatch)
    message = "Service role EMR_DefaultRole_V2 has insufficient EC2 permissions"
    failures = LaunchFailures(monkeypatch, "VALIDATION_ERROR", message, failing=2)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed"
    states = task_states(run)
    assert states["create_cluster"] == "failed" and states["add_steps"] == "upstream_failed"
    assert states["terminate_cluster"] == "upstream_failed"  # its setup failed; the cluster had ended already
    assert len(calls_named(aws_calls, "RunJobFlow")) == 1 and not calls_named(aws_calls, "AddJobFlowSteps")
    (only,) = failures.failed
    assert cluster_state(only) == "TERMINATED_WITH_ERRORS"
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert report["failed_task"] == "create_cluster"
    assert f"VALIDATION_ERROR: {message}" in report["error"] and "so no relaunch" in report["error"]
    assert [(c["id"], c["state"]) for c in report["clusters"]] == [(only, "TERMINATED_WITH_ERRORS")]


def test_a_transient_reason_that_persists_launches_no_more_than_the_allowed_clusters(
    load_dag, aws, airflow_db, monkeypatch, aws_calls
):
    emr_dag = emr_dag_with_images(load_dag, emr_launch_attempts="3")
    FakeEmr(monkeypatch)
    failures = LaunchFailures(monkeypatch, "INTERNAL_ERROR", INTERNAL_ERROR, failing=10)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed" and task_states(run)["create_cluster"] == "failed"
    assert len(calls_named(aws_calls, "RunJobFlow")) == len(failures.failed) == 3
    assert not calls_named(aws_calls, "AddJobFlowSteps")
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert "this was cluster 3 of at most 3 (FRUITFLOW_EMR_LAUNCH_ATTEMPTS)" in report["error"]
    assert [c["id"] for c in report["clusters"]] == failures.failed
    assert {cluster_state(cluster_id) for cluster_id in failures.failed} == {"TERMINATED_WITH_ERRORS"}


def test_a_failed_featurize_step_is_a_failed_night_on_its_one_cluster(emr_dag, monkeypatch, aws_calls):
    FakeEmr(monkeypatch, fail_step="featurize")

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "failed"
    states = task_states(run)
    assert states["create_cluster"] == "success" and states["watch_featurize"] == "failed"
    (created,) = calls_named(aws_calls, "RunJobFlow")
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert [c["id"] for c in report["clusters"]] == [cluster["Id"]]


def test_a_deferred_create_cluster_waits_in_the_triggerer_and_relaunches_after_a_transient_failure(
    deferrable_emr_dag, monkeypatch
):
    from airflow.providers.amazon.aws.triggers.emr import EmrCreateJobFlowTrigger

    assert deferrable_emr_dag.get_task("create_cluster").deferrable
    fake_emr = FakeEmr(monkeypatch, settle_on_add=False)
    triggers = record_triggers(monkeypatch, fake_emr)
    failures = LaunchFailures(monkeypatch, "INSTANCE_FLEET_TIMEOUT", "The instance fleet timed out provisioning")

    run = deferrable_emr_dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    waited_for = [t.serialized_fields["job_flow_id"] for t in triggers if isinstance(t, EmrCreateJobFlowTrigger)]
    (first,) = failures.failed
    assert len(waited_for) == 2 and waited_for[0] == first
    assert cluster_state(first) == "TERMINATED_WITH_ERRORS" and cluster_state(waited_for[1]) == "TERMINATED"


STEP_ROLE = "arn:aws:iam::123456789012:role/fruitflow-steps"


def guarded_emr_dag(load_dag, **settings: str):
    """The DAG of a deployment in an account with guard rails: a security configuration, a runtime
    role for the steps, the team's cost tags (one of which tries to replace a run's own tag)."""
    return emr_dag_with_images(
        load_dag,
        emr_security_configuration="fruitflow-imdsv2",
        emr_step_role=STEP_ROLE,
        emr_tags='{"cost-center": "ml-42", "project": "not-fruitflow"}',
        **settings,
    )


def test_the_guard_rails_reach_emr_and_the_deployment_tags_never_replace_the_runs_own(
    load_dag, aws, airflow_db, monkeypatch, aws_calls
):
    emr_dag = guarded_emr_dag(load_dag)
    FakeEmr(monkeypatch)

    run = emr_dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    (request,) = calls_named(aws_calls, "RunJobFlow")
    assert request["SecurityConfiguration"] == "fruitflow-imdsv2"
    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    assert (tags["cost-center"], tags["project"], tags["fruitflow-run"]) == ("ml-42", "fruitflow", run_key_of(run))
    (added,) = calls_named(aws_calls, "AddJobFlowSteps")
    assert added["ExecutionRoleArn"] == STEP_ROLE


FLEETS = {"primary": ["m5.xlarge"], "core": ["m5.2xlarge", "m6i.2xlarge"], "task": ["m5.2xlarge", "r5.2xlarge"]}


def test_a_fleet_night_asks_for_fleets_in_several_subnets_and_costs_each_type_and_market(
    load_dag, aws, airflow_db, monkeypatch, aws_calls
):
    emr_dag = emr_dag_with_images(
        load_dag,
        emr_fleets=json.dumps(FLEETS),
        emr_subnet_ids="subnet-0a1b2c3d,subnet-4e5f6a7b",
        emr_hourly_prices='{"m5.xlarge": 0.24, "m6i.2xlarge": 0.48, "r5.2xlarge:SPOT": 0.2}',
    )
    FakeEmr(monkeypatch)
    from botocore.client import BaseClient

    original, start = BaseClient._make_api_call, datetime(2026, 11, 25, 2, tzinfo=UTC)

    def fleet_instances(client, operation, params):
        # moto keeps no instances for fleets; ListInstances gives a fleet's instances with their
        # InstanceFleetId, InstanceType and Market (EMR API Reference, "Instance").
        response = original(client, operation, params)
        if operation == "ListInstances":
            launched = {"CreationDateTime": start, "EndDateTime": start + timedelta(minutes=30)}
            response["Instances"] = [
                {"Id": f"ci-{index}", "InstanceFleetId": fleet, "InstanceType": kind, "Market": market,
                 "Status": {"State": "TERMINATED", "Timeline": launched}}
                for index, (fleet, kind, market) in enumerate(
                    [("if-primary", "m5.xlarge", "ON_DEMAND"), ("if-core", "m6i.2xlarge", "ON_DEMAND"),
                     ("if-core", "m6i.2xlarge", "ON_DEMAND"), ("if-task", "r5.2xlarge", "SPOT")]
                )
            ]  # fmt: skip
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", fleet_instances)

    run = emr_dag.test(run_conf={**CONF, "core_instance_count": 2, "task_instance_count": 1})

    assert run.state == "success", task_states(run)
    (request,) = calls_named(aws_calls, "RunJobFlow")
    assert "InstanceGroups" not in request["Instances"]
    assert [(fleet["Name"], fleet.get("TargetOnDemandCapacity"), fleet.get("TargetSpotCapacity"))
            for fleet in request["Instances"]["InstanceFleets"]] == [
        ("primary", 1, None), ("core", 16, None), ("task", None, 8)
    ]  # fmt: skip
    assert request["Instances"]["Ec2SubnetIds"] == ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    report = read_json(f"results/{run_key_of(run)}/report.json")
    assert report["executor_plan"].startswith("6 executors x 4 cores on instance fleets = 24 task slots")
    assert report["cluster"]["instance_seconds"] == {
        "m5.xlarge:ON_DEMAND": 1800.0, "m6i.2xlarge:ON_DEMAND": 3600.0, "r5.2xlarge:SPOT": 1800.0
    }  # fmt: skip
    assert report["cluster"]["estimated_cost"]["total"] == round(0.5 * 0.24 + 1.0 * 0.48 + 0.5 * 0.2, 4)
