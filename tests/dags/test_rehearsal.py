"""The EMR rehearsal: the real DAG on the EMR target against a moto server, every step it adds run
for real by the rehearsal cluster: spark-submit from the step's arguments and the cluster's
configurations, ``s3://`` served from a mirror of the bucket. Not an AWS run: see
docs/develop/rehearsal.md for what it cannot show."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from fruitflow.sample_images import generate_images
from fruitflow_pipeline.cluster import ClusterShape, job_flow_spec, plan_cluster_executors
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import EmrSettings
from fruitflow_pipeline.sizing import python_worker_mb
from rehearsal.buckets import create_bucket, upload_folder
from rehearsal.cluster import (
    RehearsalCluster,
    driver_error,
    files_a_bootstrap_copies,
    local_submit_command,
    spark_defaults,
    spark_environment,
)
from rehearsal.s3_mirror import BucketMirror

ROOT = Path(__file__).resolve().parents[2]

BUCKET = "fruits"
IMAGES_URI = f"s3://{BUCKET}/images"
RESULTS_URI = f"s3://{BUCKET}/results"
CONF = {"images_uri": IMAGES_URI, "results_uri": RESULTS_URI, "weights": "random"}
# Names a user's bucket may hold: a space, non-ASCII letters, a percent sign.
ODD_NAMES = {"Kiwi/0_100.jpg": "Kiwi/kiwi slice 1.jpg", "Banana/0_100.jpg": "Banana/banane grüne é%20.jpg"}


def run_key(day: int) -> str:
    return f"202611{day:02d}T020000Z"


def night(dag, day: int, conf: dict = CONF):
    return dag.test(logical_date=datetime(2026, 11, day, 2, tzinfo=UTC), run_conf=conf)


def task_states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def s3_keys(prefix: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def read_object(key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()


def read_json(key: str) -> dict:
    return json.loads(read_object(key))


def clusters() -> list[dict]:
    emr = boto3.client("emr")
    return [emr.describe_cluster(ClusterId=c["Id"])["Cluster"] for c in emr.list_clusters()["Clusters"]]


def steps_of(cluster_id: str) -> dict[str, dict]:
    return {step["Name"]: step for step in boto3.client("emr").list_steps(ClusterId=cluster_id)["Steps"]}


def step_log(cluster: dict, step: dict, name: str) -> str:
    key = f"results/_emr_logs/{cluster['Id']}/steps/{step['Id']}/{name}.gz"
    return gzip.decompress(read_object(key)).decode()


def features_by_name(parquet_folder: Path, prefix: str) -> dict[str, np.ndarray]:
    table = pd.read_parquet(parquet_folder)
    return {
        path.removeprefix(prefix): np.asarray(vector, np.float32)
        for path, vector in zip(table["path"], table["features"], strict=True)
    }


@pytest.fixture
def images(tmp_path) -> Path:
    """40 generated images in Fruits-360 folders, two of them under names with spaces and non-ASCII letters."""
    folder = tmp_path / "images"
    generate_images(folder, 40, seed=5)
    for old, new in ODD_NAMES.items():
        (folder / "Training" / old).rename(folder / "Training" / new)
    return folder


@pytest.fixture
def bucket(aws_server, images) -> str:
    s3 = boto3.client("s3")
    create_bucket(s3, BUCKET, s3.meta.region_name)
    upload_folder(s3, images, BUCKET, "images")
    return BUCKET


@pytest.fixture
def rehearsal(aws_server, bucket, tmp_path):
    with RehearsalCluster(aws_server, tmp_path / "mirror") as cluster:
        yield cluster


@pytest.mark.spark
def test_three_nights_on_the_rehearsal_cluster_match_the_local_target(
    load_dag, airflow_db, rehearsal, images, tmp_path, caplog, aws_calls, spark_steps_in_process_for_test,
    features_asset_events,
):  # fmt: skip
    caplog.set_level("INFO", logger="fruitflow.rehearsal")
    dag = load_dag("emr", poke_interval_seconds="0.5")

    # Night 1: everything through the network, on the steps EMR would receive.
    first = night(dag, 20)
    assert first.state == "success", task_states(first)
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    steps = steps_of(cluster["Id"])
    assert {name: step["Status"]["State"] for name, step in steps.items()} == dict.fromkeys(
        ["featurize", "pca", "export_csv"], "COMPLETED"
    )
    controller = step_log(cluster, steps["featurize"], "controller")
    assert "--master 'local[*]' --deploy-mode client --py-files s3://fruits/results/_code/" in controller
    assert "ignored by local mode: spark.executor.cores=4, spark.executor.memory=" in controller
    assert "converted MobileNetV2 to ONNX" in step_log(cluster, steps["featurize"], "stdout")

    run_folder = f"results/{run_key(20)}"
    mirror = tmp_path / "mirror" / BUCKET
    features = features_by_name(mirror / run_folder / "features", f"{IMAGES_URI}/Training/")
    assert len(features) == 40 and all(vector.shape == (1280,) for vector in features.values())
    assert {f"{run_folder}/features/_model.json", f"{run_folder}/pca_features.csv"} <= s3_keys(run_folder)
    assert {key.rsplit(".", 1)[-1] for key in s3_keys("results/_models/")} == {"onnx", "json"}
    csv = pd.read_csv(mirror / run_folder / "pca_features.csv")
    assert csv["path"].str.startswith(f"{IMAGES_URI}/Training/").all() and len(csv) == 40
    assert {f"{IMAGES_URI}/Training/{name}" for name in ODD_NAMES.values()} <= set(csv["path"])
    report = read_json(f"{run_folder}/report.json")
    assert (report["status"], report["target"], report["cluster_id"]) == ("succeeded", "emr", cluster["Id"])
    assert report["counts"]["images"] == report["counts"]["csv_rows"] == 40
    assert report["counts"]["through_network"] == 40
    event = features_asset_events()[-1]  # announced once the cluster was gone, with its time
    assert (event["run"], event["cluster"]) == (run_key(20), report["cluster"])
    assert (report["cluster"]["id"], report["cluster"]["state"]) == (cluster["Id"], "TERMINATED")

    # The local target on the same images computes the same features and CSV (its steps in this
    # process's Spark session: the demo's test submits them as the local target does).
    local_results = tmp_path / "local-results"
    shutil.copytree(mirror / "results" / "_models", local_results / "_models")  # the same cache key: no conversion
    local_dag = load_dag("local")
    local_conf = {"images_uri": str(images), "results_uri": str(local_results), "weights": "random"}
    assert local_dag.test(logical_date=datetime(2026, 11, 20, 2, tzinfo=UTC), run_conf=local_conf).state == "success"
    local_features = features_by_name(local_results / run_key(20) / "features", f"file:{images}/Training/")
    assert local_features.keys() == features.keys()
    for name, vector in features.items():
        np.testing.assert_allclose(vector, local_features[name], rtol=1e-5, atol=1e-5 * np.abs(vector).max())
    local_csv = pd.read_csv(local_results / run_key(20) / "pca_features.csv")
    local_csv["path"] = local_csv["path"].str.replace(f"file:{images}", IMAGES_URI, regex=False)
    merged = csv.merge(local_csv, on=["path", "label"], suffixes=("", "_local"))
    assert len(merged) == 40 and list(csv.columns) == list(local_csv.columns)
    for column in csv.columns[2:]:
        scale = np.abs(merged[column]).max()
        np.testing.assert_allclose(merged[column], merged[f"{column}_local"], rtol=1e-5, atol=1e-5 * scale)

    # Night 2: one new image, one rewritten, one deleted.
    dag = load_dag("emr", poke_interval_seconds="0.5")
    s3 = boto3.client("s3")
    extra = generate_images(tmp_path / "extra", 12, seed=77)
    s3.upload_file(str(extra[0]), BUCKET, "images/Training/Kiwi/new one.jpg")
    s3.upload_file(str(extra[11]), BUCKET, "images/Training/Avocado/0_100.jpg")
    s3.delete_object(Bucket=BUCKET, Key="images/Training/Banana/1_100.jpg")
    aws_calls.clear()
    second = night(dag, 21)
    assert second.state == "success", task_states(second)
    (added,) = [params for operation, params in aws_calls if operation == "AddJobFlowSteps"]
    featurize_args = added["Steps"][0]["HadoopJarStep"]["Args"]
    previous = featurize_args[featurize_args.index("--previous-features") + 1]
    assert previous == f"{RESULTS_URI}/{run_key(20)}/features"
    cluster = next(c for c in clusters() if c["Name"] == f"fruitflow-{run_key(21)}")
    metrics = read_json(f"results/{run_key(21)}/metrics/featurize.json")
    assert (metrics["model_rows"], metrics["new"], metrics["changed"], metrics["removed"]) == (2, 1, 1, 1)
    assert metrics["reused"] == 38
    featurize_stdout = step_log(cluster, steps_of(cluster["Id"])["featurize"], "stdout")
    assert "model cache: using s3://fruits/results/_models/" in featurize_stdout
    assert "converted MobileNetV2" not in featurize_stdout
    again = features_by_name(mirror / "results" / run_key(21) / "features", f"{IMAGES_URI}/Training/")
    assert set(again) == (set(features) | {"Kiwi/new one.jpg"}) - {"Banana/1_100.jpg"}
    for name in set(again) - {"Kiwi/new one.jpg", "Avocado/0_100.jpg"}:
        assert again[name].tobytes() == features[name].tobytes()  # carried over from night 1's s3:// outputs
    assert again["Avocado/0_100.jpg"].tobytes() != features["Avocado/0_100.jpg"].tobytes()
    assert len(pd.read_csv(mirror / "results" / run_key(21) / "pca_features.csv")) == 40

    # Night 3: nothing changed, no cluster.
    aws_calls.clear()
    third = night(dag, 22)
    assert third.state == "success"
    assert not [operation for operation, _ in aws_calls if operation in ("RunJobFlow", "AddJobFlowSteps")]
    assert {task_states(third)[task] for task in ("create_cluster", "add_steps", "terminate_cluster")} == {"skipped"}
    report = read_json(f"results/{run_key(22)}/report.json")
    assert (report["status"], report["unchanged_since"]) == ("unchanged", run_key(21))

    rehearsal_log = caplog.text
    assert "mirrored s3://fruits in:" in rehearsal_log and "mirrored s3://fruits back:" in rehearsal_log


@pytest.mark.spark
def test_a_failing_step_fails_as_on_emr_with_its_log_and_cancels_the_rest(
    load_dag, airflow_db, rehearsal, tmp_path, capfd
):
    boto3.client("s3").put_object(Bucket=BUCKET, Key="weights/broken.h5", Body=b"not an HDF5 file")
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="fruitflow-oncall")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)
    dag = load_dag("emr", poke_interval_seconds="0.5", alert_sns_topic_arn=topic)

    run = night(dag, 20, CONF | {"weights": f"s3://{BUCKET}/weights/broken.h5"})

    assert run.state == "failed"
    states = task_states(run)
    assert states["watch_featurize"] == "failed" and states["terminate_cluster"] == "success"
    assert states["watch_pca"] == states["watch_export_csv"] == states["check_outputs"] == "upstream_failed"
    assert states["write_report"] == "success"
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    steps = steps_of(cluster["Id"])
    assert {name: step["Status"]["State"] for name, step in steps.items()} == {
        "featurize": "FAILED", "pca": "CANCELLED", "export_csv": "CANCELLED",
    }  # fmt: skip
    details = steps["featurize"]["Status"]["FailureDetails"]
    assert "featurize: error:" in details["Message"] and "broken.h5" in details["Message"]
    log_file = details["LogFile"]
    # A PySpark driver's own output and traceback are in the step's stdout; Spark's log is in stderr.
    assert log_file == f"s3://{BUCKET}/results/_emr_logs/{cluster['Id']}/steps/{steps['featurize']['Id']}/stdout.gz"
    assert details["Message"] in gzip.decompress(read_object(log_file.removeprefix(f"s3://{BUCKET}/"))).decode()
    report = read_json(f"results/{run_key(20)}/report.json")
    assert (report["status"], report["failed_task"], report["cluster_id"]) == (
        "failed",
        "watch_featurize",
        cluster["Id"],
    )
    assert "step featurize" in report["error"] and details["Message"] in report["error"]
    assert f"_emr_logs/{cluster['Id']}/steps/{steps['featurize']['Id']}/" in report["error"]
    assert report["tasks"]["terminate_cluster"] == "success" and report["tasks"]["watch_pca"] == "upstream_failed"
    assert report["steps_finished"] == {}  # featurize wrote no metrics: no counts yet
    # The job's own error line, read back from stdout.gz: in the watcher's task log, the report and the alert.
    job_error = report["error_line"]
    assert job_error.startswith("featurize: error:") and "broken.h5" in job_error
    assert f"the job's error: {job_error}" in capfd.readouterr().out
    (alert,) = [json.loads(message["Body"]) for message in sqs.receive_message(QueueUrl=queue_url)["Messages"]]
    assert alert["Subject"].startswith(f"fruitflow FAILED {run_key(20)}: watch_featurize: featurize: error:")
    assert f"Reason: {job_error}" in alert["Message"].splitlines()


def test_a_bootstrap_that_cannot_resolve_ends_the_cluster_and_create_cluster_says_so(
    load_dag, airflow_db, rehearsal, capfd
):
    dag = load_dag("emr", poke_interval_seconds="0.2", emr_wheelhouse_uri=f"s3://{BUCKET}/no-such-wheelhouse/")

    run = night(dag, 20)

    assert run.state == "failed"
    states = task_states(run)
    assert states["create_cluster"] == "failed" and states["add_steps"] == "upstream_failed"
    (cluster,) = clusters()  # a bootstrap failure is no reason to launch another
    assert cluster["Status"]["State"] == "TERMINATED_WITH_ERRORS"
    assert steps_of(cluster["Id"]) == {}  # no step was ever added to a cluster that was not ready
    reason = cluster["Status"]["StateChangeReason"]
    message = f"bootstrap action 'install fruitflow Python requirements': nothing at s3://{BUCKET}/no-such-wheelhouse/"
    assert (reason["Code"], reason["Message"]) == ("BOOTSTRAP_FAILURE", message)
    log = capfd.readouterr().out
    assert f"ended TERMINATED_WITH_ERRORS before it was ready (BOOTSTRAP_FAILURE: {message}): " in log
    assert "not a reason a new cluster would avoid, so no relaunch" in log
    report = read_json(f"results/{run_key(20)}/report.json")
    assert report["failed_task"] == "create_cluster"
    assert [(c["id"], c["reason_code"]) for c in report["clusters"]] == [(cluster["Id"], "BOOTSTRAP_FAILURE")]


@pytest.mark.slow
@pytest.mark.spark
def test_a_night_whose_first_launch_fails_completes_on_a_second_cluster_with_the_clean_nights_csv(
    load_dag, airflow_db, aws_server, bucket, images, tmp_path, spark_steps_in_process_for_test
):
    with RehearsalCluster(aws_server, tmp_path / "mirror", launch_failures=1, startup_seconds=1):
        run = night(load_dag("emr", poke_interval_seconds="0.5"), 20)
        launched = clusters()  # while the rehearsal plays EMR: DescribeCluster gives the reasons' codes

    assert run.state == "success", task_states(run)
    failed, served = sorted(launched, key=lambda cluster: cluster["Status"]["Timeline"]["CreationDateTime"])
    assert failed["Status"]["State"] == "TERMINATED_WITH_ERRORS"
    assert failed["Status"]["StateChangeReason"]["Code"] == "INTERNAL_ERROR"
    assert served["Status"]["State"] == "TERMINATED" and steps_of(failed["Id"]) == {}
    report = read_json(f"results/{run_key(20)}/report.json")
    assert report["cluster_id"] == served["Id"]
    assert [(c["id"], c["state"]) for c in report["clusters"]] == [
        (failed["Id"], "TERMINATED_WITH_ERRORS"), (served["Id"], "TERMINATED"),
    ]  # fmt: skip
    csv = pd.read_csv(tmp_path / "mirror" / BUCKET / "results" / run_key(20) / "pca_features.csv")

    # A clean night of the same images (the local target, which the three-night test shows writes the
    # rehearsal's CSV) writes the same CSV.
    local_results = tmp_path / "local-results"
    shutil.copytree(tmp_path / "mirror" / BUCKET / "results" / "_models", local_results / "_models")
    local_conf = {"images_uri": str(images), "results_uri": str(local_results), "weights": "random"}
    clean = load_dag("local").test(logical_date=datetime(2026, 11, 20, 2, tzinfo=UTC), run_conf=local_conf)
    assert clean.state == "success"
    local_csv = pd.read_csv(local_results / run_key(20) / "pca_features.csv")
    local_csv["path"] = local_csv["path"].str.replace(f"file:{images}", IMAGES_URI, regex=False)
    merged = csv.merge(local_csv, on=["path", "label"], suffixes=("", "_local"))
    assert len(merged) == len(csv) == 40 and list(csv.columns) == list(local_csv.columns)
    for column in csv.columns[2:]:
        scale = np.abs(merged[column]).max()
        np.testing.assert_allclose(merged[column], merged[f"{column}_local"], rtol=1e-5, atol=1e-5 * scale)


BOOTSTRAP_SCRIPT = """#!/bin/bash
set -euo pipefail
code_uri="${1%/}"
python="$2"
mkdir -p "$FRUITFLOW_BOOTSTRAP_DIR"
aws s3 cp --only-show-errors "$code_uri/requirements.txt" "$FRUITFLOW_BOOTSTRAP_DIR/requirements.txt"
sudo "$python" -c "import sys; print('node python', sys.prefix)"
exit "${3:-0}"
"""


def start_cluster_with_bootstrap(*extra_args: str) -> str:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="code/bootstrap.sh", Body=BOOTSTRAP_SCRIPT.encode())
    s3.put_object(Bucket=BUCKET, Key="code/requirements.txt", Body=b"pillow\n")
    return boto3.client("emr").run_job_flow(
        Name="fruitflow-bootstrap",
        ReleaseLabel="emr-7.10.0",
        LogUri=f"s3://{BUCKET}/logs/",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        BootstrapActions=[{"Name": "node", "ScriptBootstrapAction": {
            "Path": f"s3://{BUCKET}/code/bootstrap.sh",
            "Args": [f"s3://{BUCKET}/code", "/usr/bin/python3.11", *extra_args],
        }}],
        Configurations=[{"Classification": "spark-env", "Configurations": [
            {"Classification": "export", "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3.11"}}]}],
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole_V2",
    )["JobFlowId"]  # fmt: skip


def wait_for_state(cluster_id: str, states: set[str]) -> dict:
    import time

    for _ in range(600):
        cluster = boto3.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]
        if cluster["Status"]["State"] in states:
            return cluster
        time.sleep(0.1)
    raise AssertionError(f"cluster {cluster_id} never reached {states}")


@pytest.mark.parametrize("exit_code", ["0", "3"])
def test_a_rehearsed_bootstrap_runs_on_a_throwaway_python_and_fails_the_cluster_when_it_fails(
    aws_server, bucket, tmp_path, exit_code
):
    with RehearsalCluster(aws_server, tmp_path / "mirror", run_bootstrap=True, startup_seconds=0.1):
        cluster_id = start_cluster_with_bootstrap(exit_code)
        cluster = wait_for_state(cluster_id, {"WAITING", "TERMINATED_WITH_ERRORS"})

    node_log = gzip.decompress(read_object(f"logs/{cluster_id}/node/i-rehearsal/bootstrap-actions/1/stdout.gz"))
    assert b"node python " + str(tmp_path).encode() not in node_log  # a venv of its own, not this test's Python
    assert b"node python /tmp/rehearsal-node-" + cluster_id.encode() in node_log
    if exit_code == "0":
        assert cluster["Status"]["State"] == "WAITING"
    else:
        assert cluster["Status"]["State"] == "TERMINATED_WITH_ERRORS"
        assert "bootstrap action 1 returned a non-zero return code" in cluster["Status"]["StateChangeReason"]["Message"]


def test_a_fleet_request_starts_a_rehearsal_cluster_whose_executor_sizing_is_the_fleets(aws_server, bucket, tmp_path):
    fleets = {"primary": ("m5.xlarge",), "core": ("m5.2xlarge", "c5.2xlarge")}
    shape = ClusterShape("emr-7.10.0", "m5.xlarge", "m5.2xlarge", 2, "m5.2xlarge", 0, "SPOT", fleets)
    executors = plan_cluster_executors(shape, python_worker_mb("onnx", 16))
    run = PipelineRun("20261125T020000Z", IMAGES_URI, RESULTS_URI, "abc", 0.95, "random", 16, 0.05, "onnx")
    request = job_flow_spec(run, shape, EmrSettings(subnet_ids=("subnet-0a1b2c3d", "subnet-4e5f6a7b")), "r", executors)
    request["BootstrapActions"] = []  # this test is about the instances; bootstraps are rehearsed above
    with RehearsalCluster(aws_server, tmp_path / "mirror", startup_seconds=0.1) as rehearsal:
        cluster_id = boto3.client("emr").run_job_flow(**request)["JobFlowId"]
        cluster = wait_for_state(cluster_id, {"WAITING", "TERMINATED_WITH_ERRORS"})
        assert cluster["Status"]["State"] == "WAITING"
        args = ["spark-submit", "--deploy-mode", "client", "s3://fruits/code/featurize.py"]
        _, _, controller = rehearsal.prepare(args, cluster["Configurations"], tmp_path)
    # c5.2xlarge, 1.5 GB of YARN memory per vCPU: 6144 MB for each 4-core executor on any type of the fleet.
    assert executors.heap_mb + executors.overhead_mb == 6144
    assert f"spark.executor.memory={executors.heap_mb}m" in controller[2]  # read from the cluster, local mode ignores


def test_the_real_bootstrap_script_copies_the_code_versions_requirements_and_constraints_of_both_sets():
    script = (ROOT / "spark_jobs" / "cluster" / "bootstrap.sh").read_text()
    args = ["s3://fruits/results/_code/abc/", "/usr/bin/python3.11", "onnx"]
    assert files_a_bootstrap_copies(script, args) == [
        "s3://fruits/results/_code/abc/requirements-lean.txt",
        "s3://fruits/results/_code/abc/constraints-lean.txt",
        "s3://fruits/results/_code/abc/requirements.txt",
        "s3://fruits/results/_code/abc/constraints.txt",
    ]


def test_a_step_becomes_a_local_spark_submit_with_nothing_else_changed():
    args = ["spark-submit", "--deploy-mode", "cluster", "--master", "yarn", "--py-files", "s3://b/c.zip",
            "s3://b/featurize.py", "--images", "s3://b/my images"]  # fmt: skip
    assert local_submit_command(args, "/opt/spark/bin/spark-submit") == [
        "/opt/spark/bin/spark-submit", "--master", "local[*]", "--deploy-mode", "client",
        "--py-files", "s3://b/c.zip", "s3://b/featurize.py", "--images", "s3://b/my images",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="spark-submit steps only"):
        local_submit_command(["hadoop-streaming", "-input", "x"], "spark-submit")


def test_the_cluster_configurations_map_to_local_settings_and_name_what_local_mode_ignores():
    configurations = [
        {"Classification": "spark-env", "Configurations": [
            {"Classification": "export", "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3.11"}}]},
        {"Classification": "spark-defaults", "Properties": {
            "spark.pyspark.python": "/usr/bin/python3.11", "spark.executor.cores": "4",
            "spark.dynamicAllocation.enabled": "true", "spark.driver.maxResultSize": "2g"}},
    ]  # fmt: skip
    properties, ignored = spark_defaults(configurations, "/venv/bin/python")
    assert properties["spark.pyspark.python"] == "/venv/bin/python"
    assert properties["spark.driver.maxResultSize"] == "2g"
    assert ignored == ["spark.dynamicAllocation.enabled", "spark.executor.cores"]
    assert spark_environment(configurations, "/venv/bin/python") == {"PYSPARK_PYTHON": "/venv/bin/python"}


def test_the_driver_error_is_the_jobs_own_line_wherever_it_is():
    stdout = "INFO starting\nfeaturize: error: weights x.h5 are not MobileNetV2\n: java.lang.Exception: more\n"
    stderr = "26/11/29 INFO SparkContext: stopped\n"
    assert driver_error({"stdout": stdout, "stderr": stderr}) == (
        "featurize: error: weights x.h5 are not MobileNetV2",
        "stdout",
    )
    traceback = "Traceback (most recent call last):\n  File x\nValueError: bad input\n"
    assert driver_error({"stdout": traceback, "stderr": stderr}) == ("ValueError: bad input", "stdout")
    assert driver_error({"stdout": "", "stderr": "a\n26/11/29 ERROR Executor: lost\nb\n"}) == (
        "26/11/29 ERROR Executor: lost", "stderr")  # fmt: skip


def test_the_mirror_gives_files_the_objects_times_and_puts_back_only_what_a_step_changed(aws, tmp_path):
    s3 = boto3.client("s3")
    create_bucket(s3, BUCKET, s3.meta.region_name)
    for key in ("images/a b.jpg", "images/é.jpg", "results/old.json"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    mirror = BucketMirror(s3, BUCKET, tmp_path)

    assert sorted(mirror.pull().copied) == ["images/a b.jpg", "images/é.jpg", "results/old.json"]
    modified = s3.head_object(Bucket=BUCKET, Key="images/é.jpg")["LastModified"]
    assert (tmp_path / BUCKET / "images" / "é.jpg").stat().st_mtime == modified.timestamp()
    assert mirror.pull().copied == []  # nothing changed since

    (tmp_path / BUCKET / "results" / "new").mkdir()
    (tmp_path / BUCKET / "results" / "new" / "part-0.parquet").write_bytes(b"rows")
    (tmp_path / BUCKET / "results" / "new" / ".part-0.parquet.crc").write_bytes(b"local checksum")
    (tmp_path / BUCKET / "results" / "old.json").unlink()
    pushed = mirror.push()
    assert (pushed.copied, pushed.deleted) == (["results/new/part-0.parquet"], ["results/old.json"])
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {"images/a b.jpg", "images/é.jpg", "results/new/part-0.parquet"}

    s3.put_object(Bucket=BUCKET, Key="images/a b.jpg", Body=b"rewritten")
    s3.delete_object(Bucket=BUCKET, Key="images/é.jpg")
    pulled = mirror.pull()
    assert (pulled.copied, pulled.deleted) == (["images/a b.jpg"], ["images/é.jpg"])
    assert (tmp_path / BUCKET / "images" / "a b.jpg").read_bytes() == b"rewritten"
