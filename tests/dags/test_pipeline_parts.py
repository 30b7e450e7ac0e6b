"""The Airflow side's pure parts: settings, run folders, the shared step list, the cluster request,
param validation, the code bundle and the output checks."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from fruitflow.contract import DEFAULT_BATCH_SIZE, ExplainedVariance, ExportCsvMetrics, FeaturizeMetrics, PcaMetrics
from fruitflow_pipeline.cluster import ClusterShape, job_flow_spec, plan_cluster_executors, worker_groups
from fruitflow_pipeline.code_bundle import build_bundle, code_version
from fruitflow_pipeline.params import InvalidParams, validate_run
from fruitflow_pipeline.report import problems_in, run_report, steps_so_far, summarise_outputs
from fruitflow_pipeline.run import PipelineRun, run_key
from fruitflow_pipeline.run_folder import RunFolderTaken, claim_run_folder, ensure_own
from fruitflow_pipeline.settings import EmrSettings, LocalSettings, SettingError, Settings, Target, idle_timeout_for
from fruitflow_pipeline.sizing import SizingError, plan_executors, plan_fleet_executors, python_worker_mb
from fruitflow_pipeline.steps import PIPELINE, emr_step, local_command
from fruitflow_pipeline.storage import LocalStorage

ROOT = Path(__file__).resolve().parents[2]

RUN = PipelineRun(
    key="20261125T020000Z",
    images_uri="s3://fruits/images",
    results_uri="s3://fruits/results",
    code_version="abc123",
    variance=0.9,
    weights="imagenet",
    batch_size=32,
    max_error_share=0.05,
    engine="onnx",
)
SHAPE = ClusterShape("emr-7.10.0", "m5.xlarge", "m5.2xlarge", 3, "m5.4xlarge", 4, "SPOT")


def test_settings_default_to_emr_with_every_knob_overridable():
    assert Settings.from_env({}).target is Target.EMR
    settings = Settings.from_env(
        {
            "FRUITFLOW_TARGET": "LOCAL",
            "FRUITFLOW_SCHEDULE": "30 1 * * *",
            "FRUITFLOW_POKE_INTERVAL_SECONDS": "0.5",
            "FRUITFLOW_FEATURIZE_TIMEOUT_MINUTES": "30",
            "FRUITFLOW_EMR_SERVICE_ROLE": "MyEmrRole",
            "FRUITFLOW_SPARK_MASTER": "spark://spark:7077",
        }
    )
    assert settings.target is Target.LOCAL
    assert settings.schedule == "30 1 * * *"
    assert settings.poke_interval_seconds == 0.5
    assert settings.timeout_minutes == {"featurize": 30, "pca": 60, "export_csv": 60}
    assert settings.emr.service_role == "MyEmrRole"
    assert settings.local.spark_master == "spark://spark:7077"
    assert settings.images_uri.endswith("data/images")  # local default: a folder in the repo


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITFLOW_TARGET": "kubernetes"}, "use 'emr' or 'local'"),
        ({"FRUITFLOW_POKE_INTERVAL_SECONDS": "often"}, "is not a number"),
        ({"FRUITFLOW_EMR_IDLE_TIMEOUT_SECONDS": "-5"}, "must be positive"),
        (
            {"FRUITFLOW_TARGET": "local", "FRUITFLOW_WEIGHTS": "models/m.h5"},
            "FRUITFLOW_WEIGHTS='models/m.h5' is a relative",
        ),
        ({"FRUITFLOW_WEIGHTS": "/models/m.h5"}, "must be an s3:// URI on EMR"),
        ({"FRUITFLOW_WEIGHTS": "s3://b/m.bin"}, "must be 'imagenet', 'random' or a Keras .h5"),
        ({"FRUITFLOW_EMR_WHEELHOUSE_URI": "build/wheelhouse"}, "must be an s3:// URI"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(SettingError, match=message):
        Settings.from_env(env)


def test_weights_and_idle_timeout_settings():
    assert Settings.from_env({}).weights == "imagenet"
    assert Settings.from_env({"FRUITFLOW_WEIGHTS": "s3://models/mobilenet.h5"}).weights == "s3://models/mobilenet.h5"
    local = {"FRUITFLOW_TARGET": "local", "FRUITFLOW_WEIGHTS": "file:///models/mobilenet.h5"}
    assert Settings.from_env(local).weights == "file:///models/mobilenet.h5"
    # Two pokes and ten minutes after the last step: 12 min with the default 60 s poke, not an hour.
    assert Settings.from_env({}).emr.idle_timeout_seconds == idle_timeout_for(60) == 720
    assert Settings.from_env({"FRUITFLOW_POKE_INTERVAL_SECONDS": "300"}).emr.idle_timeout_seconds == 1200
    assert Settings.from_env({"FRUITFLOW_EMR_IDLE_TIMEOUT_SECONDS": "900"}).emr.idle_timeout_seconds == 900


def test_wheelhouse_setting_reaches_the_bootstrap():
    emr = Settings.from_env({"FRUITFLOW_EMR_WHEELHOUSE_URI": "s3://fruits/wheelhouse/"}).emr
    spec = job_flow_spec(RUN, SHAPE, emr, "scheduled__x", plan_executors(worker_groups(SHAPE), ONNX_WORKER_MB))
    (bootstrap,) = spec["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"]["Args"] == [
        RUN.code_uri,
        "/usr/bin/python3.11",
        RUN.engine,
        "s3://fruits/wheelhouse/",
    ]


def test_the_runs_engine_reaches_the_bootstrap_which_picks_each_nodes_packages_by_it():
    emr = Settings.from_env({}).emr
    run = dataclasses.replace(RUN, engine="tensorflow")
    spec = job_flow_spec(run, SHAPE, emr, "scheduled__x", plan_executors(worker_groups(SHAPE), ONNX_WORKER_MB))
    (bootstrap,) = spec["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"]["Args"] == [RUN.code_uri, "/usr/bin/python3.11", "tensorflow"]


@pytest.mark.parametrize(
    ("engine", "cached"), [("onnx", True), ("openvino", True), ("openvino-bf16", True), ("tensorflow", False)]
)
def test_the_engines_that_run_the_converted_model_share_its_cache(engine, cached):
    arguments = PIPELINE[0].arguments(dataclasses.replace(RUN, engine=engine))
    assert (arguments.engine, arguments.model_cache) == (engine, RUN.model_cache_uri if cached else None)


def test_run_folders_are_claimed_once_and_never_emptied_for_another_run(tmp_path):
    storage, results = LocalStorage(), str(tmp_path)
    moment = datetime(2026, 11, 26, 8, 50, 43, 200000, tzinfo=UTC)
    assert claim_run_folder(storage, results, moment, "run-a", "fruits_features") == "20261126T085043Z"
    assert (
        claim_run_folder(storage, results, moment, "run-a", "fruits_features") == "20261126T085043Z"
    )  # a retry keeps its folder
    assert claim_run_folder(storage, results, moment, "run-b", "fruits_features") == "20261126T085043Z-200000"
    assert claim_run_folder(storage, results, moment, "run-c", "fruits_features") == "20261126T085043Z-200000-2"
    assert sorted(["20261126T085043Z", "20261126T085043Z-200000", "20261126T085044Z"])[0] == "20261126T085043Z"
    ensure_own(storage, f"{results}/20261126T085043Z", "run-a")
    with pytest.raises(RunFolderTaken, match="20261126T085043Z belongs to DAG run run-a, not to this DAG run .run-b."):
        ensure_own(storage, f"{results}/20261126T085043Z", "run-b")
    with pytest.raises(RunFolderTaken, match="has no _dag_run.json claiming it"):
        ensure_own(storage, f"{results}/20261127T020000Z", "run-a")
    (tmp_path / "20261120T020000Z").mkdir()  # written before folders were claimed: free to claim
    assert (
        claim_run_folder(storage, results, datetime(2026, 11, 20, 2, tzinfo=UTC), "run-d", "fruits_features")
        == "20261120T020000Z"
    )


def test_run_key_is_the_logical_date_in_utc():
    moment = datetime(2026, 11, 25, 3, 0, tzinfo=timezone(timedelta(hours=1)))
    assert run_key(moment) == "20261125T020000Z"


def test_run_folder_layout():
    assert RUN.uri == "s3://fruits/results/20261125T020000Z"
    assert [RUN.features_uri, RUN.errors_uri, RUN.pca_uri, RUN.csv_uri] == [
        f"{RUN.uri}/features", f"{RUN.uri}/errors", f"{RUN.uri}/pca", f"{RUN.uri}/pca_features.csv"
    ]  # fmt: skip
    assert RUN.report_uri == f"{RUN.uri}/report.json"
    assert PipelineRun.from_xcom(json.loads(json.dumps(RUN.to_xcom()))) == RUN


def test_the_steps_chain_their_outputs():
    arguments = {step.name: step.submit_arguments(RUN) for step in PIPELINE}
    assert list(arguments) == ["featurize", "pca", "export_csv"]
    featurize, pca, export = arguments.values()
    assert featurize[:3] == ["--py-files", f"{RUN.code_uri}/fruitflow.zip", f"{RUN.code_uri}/featurize.py"]
    assert featurize[featurize.index("--images") + 1] == RUN.images_uri
    assert featurize[featurize.index("--output") + 1] == pca[pca.index("--features") + 1] == RUN.features_uri
    assert pca[pca.index("--output") + 1] == export[export.index("--pca") + 1] == RUN.pca_uri
    assert (
        pca[pca.index("--explained-variance") + 1] == RUN.explained_variance_uri == f"{RUN.uri}/explained_variance.json"
    )
    assert pca[pca.index("--plot") + 1] == RUN.plot_uri == f"{RUN.uri}/explained_variance.png"
    assert pca[pca.index("--scatter") + 1] == RUN.scatter_uri == f"{RUN.uri}/pca_scatter.png"
    assert export[export.index("--output") + 1] == RUN.csv_uri
    assert pca[pca.index("--variance") + 1] == "0.9"
    assert featurize[featurize.index("--weights") + 1] == "imagenet"
    assert featurize[featurize.index("--batch-size") + 1] == "32"
    for name, args in arguments.items():
        assert args[args.index("--metrics") + 1] == f"{RUN.uri}/metrics/{name}.json"


def test_emr_and_local_run_the_same_step_arguments():
    local = LocalSettings(
        spark_master="local[3]", python="/opt/py/bin/python", spark_submit="/opt/spark/bin/spark-submit"
    )
    for step in PIPELINE:
        emr = emr_step(step, RUN)
        command, environment = local_command(step, RUN, local)
        assert emr["Name"] == step.name
        assert emr["ActionOnFailure"] == "CANCEL_AND_WAIT"
        assert emr["HadoopJarStep"]["Jar"] == "command-runner.jar"
        assert emr["HadoopJarStep"]["Args"][:3] == ["spark-submit", "--deploy-mode", "client"]
        shared = step.submit_arguments(RUN)
        assert emr["HadoopJarStep"]["Args"][-len(shared) :] == shared
        assert command[0] == "/opt/spark/bin/spark-submit"
        assert command[command.index("--master") + 1] == "local[3]"
        assert command[-len(shared) :] == shared
        assert environment == {
            "PYSPARK_PYTHON": "/opt/py/bin/python",
            "PYSPARK_DRIVER_PYTHON": "/opt/py/bin/python",
            "SPARK_HOME": "/opt/spark",
        }


def test_job_flow_spec_is_a_transient_cluster_that_cleans_up_after_itself():
    emr = EmrSettings(subnet_ids=("subnet-123",), idle_timeout_seconds=1800)
    executors = plan_executors(worker_groups(SHAPE), ONNX_WORKER_MB)
    spec = job_flow_spec(RUN, SHAPE, emr, "manual__2026-11-25T02:00:00.123456+00:00", executors)
    assert spec["ReleaseLabel"] == "emr-7.10.0"
    assert spec["Applications"] == [{"Name": "Spark"}]
    assert spec["LogUri"] == "s3://fruits/results/_emr_logs/"
    assert spec["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert spec["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert spec["Instances"]["TerminationProtected"] is False
    assert spec["Instances"]["Ec2SubnetId"] == "subnet-123"
    groups = {group["InstanceRole"]: group for group in spec["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["InstanceCount"] == 1 and groups["MASTER"]["Market"] == "ON_DEMAND"
    assert (groups["CORE"]["InstanceType"], groups["CORE"]["InstanceCount"]) == ("m5.2xlarge", 3)
    assert (groups["TASK"]["Market"], groups["TASK"]["InstanceCount"]) == ("SPOT", 4)
    (bootstrap,) = spec["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"] == {
        "Path": f"{RUN.code_uri}/bootstrap.sh",
        "Args": [RUN.code_uri, "/usr/bin/python3.11", RUN.engine],
    }
    assert spec["EbsRootVolumeSize"] == 30
    spark_env = next(c for c in spec["Configurations"] if c["Classification"] == "spark-env")
    defaults = next(c for c in spec["Configurations"] if c["Classification"] == "spark-defaults")["Properties"]
    assert defaults.items() >= executors.spark_defaults().items()
    assert defaults["spark.driver.maxResultSize"] == "2g"
    assert spark_env["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert (spec["ServiceRole"], spec["JobFlowRole"]) == ("EMR_DefaultRole_V2", "EMR_EC2_DefaultRole")
    tags = {tag["Key"]: tag["Value"] for tag in spec["Tags"]}
    assert tags["fruitflow-run"] == RUN.key and tags["fruitflow-code"] == "abc123"
    assert tags["airflow-dag-run-id"] == "manual__2026-11-25T02:00:00.123456+00:00"  # every character allowed in tags
    assert tags["fruitflow-executors"] == executors.describe()
    assert re.fullmatch(r"[\w .:/=+\-@]+", executors.describe())  # EMR refuses other characters in tags


ONNX_WORKER_MB = python_worker_mb("onnx", DEFAULT_BATCH_SIZE)  # the default engine and batch size


def test_python_worker_memory_follows_the_engine_and_the_batch():
    # Measured in the job: ONNX Runtime 632 MB at batch 32 and 1,002 MB at 64; OpenVINO 444 MB at
    # batch 16 and 857 MB at 64 (bf16: 365 and 631 MB); TensorFlow 1,020 MB at batch 16 and 1,875 MB at 64.
    assert [python_worker_mb("onnx", batch) for batch in (32, 64)] == [644, 1028]
    assert [python_worker_mb("openvino", batch) for batch in (16, 64)] == [454, 886]
    assert [python_worker_mb("openvino-bf16", batch) for batch in (16, 64)] == [454, 886]  # sized as f32
    assert [python_worker_mb("tensorflow", batch) for batch in (16, 64)] == [1028, 1892]


def test_default_shape_gives_every_core_a_task_and_each_python_worker_its_memory():
    plan = plan_executors([("m5.2xlarge", 2), ("m5.2xlarge", 0)], ONNX_WORKER_MB)
    # m5.2xlarge: 8 vCPUs, 24576 MB of YARN memory: two executors of 4 cores and 12288 MB each.
    assert (plan.executors, plan.executor_cores, plan.task_slots, plan.partitions) == (4, 4, 16, 64)
    assert plan.overhead_mb == 4 * 565 + 384  # a 452 MB ONNX Runtime worker per core, +25%, + the JVM's own
    assert plan.heap_mb + plan.overhead_mb == 12288
    assert plan.spark_defaults() == {
        "spark.default.parallelism": "16",  # the task slots, not the cores YARN has registered at start
        "spark.executor.cores": "4",
        "spark.executor.memory": "9644m",
        "spark.executor.memoryOverhead": "2644m",
    }
    assert plan.describe() == (
        "2 nodes x 2 executors x 4 cores = 16 task slots with 2.6 GB Python memory and 9.4 GB heap per executor"
    )
    tensorflow = plan_executors([("m5.2xlarge", 2)], python_worker_mb("tensorflow", 64))
    assert (tensorflow.task_slots, tensorflow.overhead_mb, tensorflow.heap_mb) == (16, 4 * 2365 + 384, 2444)


def test_memory_rich_and_mixed_shapes():
    r5 = plan_executors([("r5.2xlarge", 3)], ONNX_WORKER_MB)
    assert (r5.task_slots, r5.heap_mb + r5.overhead_mb) == (24, 57344 // 2)
    mixed = plan_executors([("m5.2xlarge", 2), ("m5.4xlarge", 4)], ONNX_WORKER_MB)  # one executor size fits both
    assert (mixed.executors, mixed.task_slots) == (2 * 2 + 4 * 4, 80)
    assert mixed.heap_mb + mixed.overhead_mb == 12288  # what the tighter m5.2xlarge allows
    assert mixed.describe().startswith("20 executors x 4 cores on 6 nodes = 80 task slots with 2.6 GB")
    small = plan_executors([("m5.xlarge", 1)], ONNX_WORKER_MB)
    assert (small.executors, small.executor_cores, small.heap_mb) == (1, 4, 12288 - 2644)
    # c5.4xlarge (1.5 GB per vCPU) holds ONNX Runtime workers of the default batch, not of 64 (below).
    compute = plan_executors([("c5.4xlarge", 2)], ONNX_WORKER_MB)
    assert (compute.executors, compute.task_slots, compute.heap_mb) == (8, 32, 6144 - (4 * 565 + 384))


@pytest.mark.parametrize(
    ("groups", "engine", "message"),
    [
        (
            [("c5.4xlarge", 2)],
            "onnx",
            "c5.4xlarge has 1536 MB of YARN memory per vCPU: a Python worker per core needs 1285 MB",
        ),
        ([("m5.2xlarge", 2), ("c5.2xlarge", 1)], "tensorflow", "c5.2xlarge has 1536 MB"),
        ([("m5.2xlarge", 2), ("x9.huge", 1)], "onnx", "no YARN sizing known for x9.huge; supported types: m5.xlarge"),
    ],
)
def test_shapes_that_cannot_hold_a_worker_per_core_are_refused(groups, engine, message):
    with pytest.raises(SizingError, match=re.escape(message)):
        plan_executors(groups, python_worker_mb(engine, 64))


def test_no_task_group_without_task_nodes():
    shape = ClusterShape("emr-7.10.0", "m5.xlarge", "m5.2xlarge", 2, "m5.2xlarge", 0, "SPOT")
    roles = [
        group["InstanceRole"]
        for group in job_flow_spec(
            RUN, shape, EmrSettings(), "run", plan_executors(worker_groups(shape), ONNX_WORKER_MB)
        )["Instances"]["InstanceGroups"]
    ]
    assert roles == ["MASTER", "CORE"]


FLEETS = {
    "primary": ("m5.xlarge", "m5.2xlarge"),
    "core": ("m5.2xlarge", "m6i.2xlarge", "r5.2xlarge"),
    "task": ("m5.4xlarge", "c5.4xlarge"),
}


def test_a_fleet_request_weights_every_type_by_vcpus_and_falls_back_from_spot_to_on_demand():
    shape = dataclasses.replace(SHAPE, fleets=FLEETS)  # 3 core m5.2xlarge, 4 task m5.4xlarge on spot
    emr = EmrSettings(subnet_ids=("subnet-0a1b2c3d", "subnet-4e5f6a7b"))
    instances = job_flow_spec(RUN, shape, emr, "run", plan_cluster_executors(shape, ONNX_WORKER_MB))["Instances"]
    assert "InstanceGroups" not in instances and "Ec2SubnetId" not in instances
    assert instances["Ec2SubnetIds"] == ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
    primary, core, task = instances["InstanceFleets"]
    assert (primary["InstanceFleetType"], primary["TargetOnDemandCapacity"]) == ("MASTER", 1)
    assert [c["WeightedCapacity"] for c in primary["InstanceTypeConfigs"]] == [1, 1]  # EMR: a primary target of 1
    assert (core["InstanceFleetType"], core["TargetOnDemandCapacity"], "TargetSpotCapacity" in core) == (
        "CORE",
        3 * 8,
        False,
    )
    assert {c["InstanceType"]: c["WeightedCapacity"] for c in core["InstanceTypeConfigs"]} == {
        "m5.2xlarge": 8, "m6i.2xlarge": 8, "r5.2xlarge": 8
    }  # fmt: skip
    assert core["LaunchSpecifications"] == {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    assert (task["InstanceFleetType"], task["TargetSpotCapacity"], "TargetOnDemandCapacity" in task) == (
        "TASK",
        4 * 16,
        False,
    )
    assert task["LaunchSpecifications"]["SpotSpecification"] == {
        "TimeoutDurationMinutes": 10, "TimeoutAction": "SWITCH_TO_ON_DEMAND",
        "AllocationStrategy": "price-capacity-optimized",
    }  # fmt: skip
    on_demand_tasks = dataclasses.replace(shape, task_market="ON_DEMAND", task_instance_count=1)
    (*_, task) = job_flow_spec(
        RUN, on_demand_tasks, EmrSettings(), "run", plan_cluster_executors(on_demand_tasks, ONNX_WORKER_MB)
    )["Instances"]["InstanceFleets"]
    assert (task["TargetOnDemandCapacity"], "SpotSpecification" in task["LaunchSpecifications"]) == (16, False)


def test_fleet_executors_fit_the_type_with_the_least_yarn_memory_per_vcpu():
    shape = dataclasses.replace(SHAPE, fleets=FLEETS)
    plan = plan_cluster_executors(shape, ONNX_WORKER_MB)
    # c5.4xlarge: 1536 MB per vCPU, the least among the core and task types: 6144 MB per 4-core executor.
    assert (plan.executor_cores, plan.heap_mb + plan.overhead_mb) == (4, 6144)
    assert (plan.executors, plan.task_slots) == ((3 * 8 + 4 * 16) // 4, 3 * 8 + 4 * 16)
    assert plan.describe().startswith("22 executors x 4 cores on instance fleets = 88 task slots")
    groups_plan = plan_executors(worker_groups(shape), ONNX_WORKER_MB)  # the same counts as instance groups
    assert groups_plan.heap_mb + groups_plan.overhead_mb == 12288  # no c5 there: more memory per executor
    with pytest.raises(SizingError, match="c5.4xlarge has 1536 MB of YARN memory per vCPU"):
        plan_fleet_executors(["m5.2xlarge", "c5.4xlarge"], 16, python_worker_mb("onnx", 64))
    without_task_types = dataclasses.replace(shape, fleets={role: FLEETS[role] for role in ("primary", "core")})
    with pytest.raises(SizingError, match="FRUITFLOW_EMR_FLEETS names no task instance types"):
        plan_cluster_executors(without_task_types, ONNX_WORKER_MB)


def test_fleet_executors_fit_a_type_added_from_the_emr_task_configuration_page():
    # m6a.2xlarge: 23424 MB of YARN memory on 8 vCPUs, less per vCPU than m5.2xlarge or r5.2xlarge beside it.
    plan = plan_fleet_executors(["m5.2xlarge", "m6a.2xlarge", "r5.2xlarge"], 24, ONNX_WORKER_MB)
    assert (plan.executor_cores, plan.executors, plan.heap_mb + plan.overhead_mb) == (4, 6, 23424 // 2)
    # c5a.4xlarge: 23424 MB on 16 vCPUs, four 4-core executors of 5856 MB.
    compute_plan = plan_fleet_executors(["m6i.4xlarge", "c5a.4xlarge"], 32, ONNX_WORKER_MB)
    assert (compute_plan.executors, compute_plan.heap_mb + compute_plan.overhead_mb) == (8, 23424 // 4)


def test_fleets_and_subnets_are_read_from_the_settings():
    fleets = json.dumps({role: list(types) for role, types in FLEETS.items()})
    emr = Settings.from_env(
        {"FRUITFLOW_EMR_FLEETS": fleets, "FRUITFLOW_EMR_SUBNET_IDS": "subnet-0a1b2c3d, subnet-4e5f6a7b"}
    ).emr
    assert (emr.fleets, emr.subnet_ids) == (FLEETS, ("subnet-0a1b2c3d", "subnet-4e5f6a7b"))
    assert Settings.from_env({"FRUITFLOW_EMR_SUBNET_ID": "subnet-1"}).emr.subnet_ids == ("subnet-1",)
    assert Settings.from_env({}).emr.fleets == {}  # instance groups stay the default


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITFLOW_EMR_FLEETS": "[]"}, "FRUITFLOW_EMR_FLEETS must be a JSON object of role to instance types"),
        ({"FRUITFLOW_EMR_FLEETS": '{"core": "m5.xlarge"}'}, "must be a JSON object of role to instance types"),
        ({"FRUITFLOW_EMR_FLEETS": '{"core": ["m5.2xlarge"]}'}, "FRUITFLOW_EMR_FLEETS: no instance types for primary"),
        (
            {"FRUITFLOW_EMR_FLEETS": '{"primary": ["m5.xlarge"], "core": ["m5.2xlarge"], "master": []}'},
            "unknown role(s) master; use primary, core, task",
        ),
        (
            {"FRUITFLOW_EMR_FLEETS": '{"primary": ["m5.xlarge"], "core": []}'},
            "core needs 1 to 30 different instance types, got []",
        ),
        (
            {"FRUITFLOW_EMR_FLEETS": '{"primary": ["m7g.xlarge"], "core": ["m5.2xlarge", "m7g.2xlarge"]}'},
            "no YARN sizing known for core type(s) m7g.2xlarge",
        ),
        (
            {"FRUITFLOW_EMR_SUBNET_ID": "subnet-0a1b2c3d", "FRUITFLOW_EMR_SUBNET_IDS": "subnet-4e5f6a7b"},
            "FRUITFLOW_EMR_SUBNET_ID and FRUITFLOW_EMR_SUBNET_IDS are both set: set one",
        ),
        ({"FRUITFLOW_EMR_SUBNET_IDS": "subnet-0a1b2c3d,vpc-1"}, "FRUITFLOW_EMR_SUBNET_IDS: vpc-1 is no subnet id"),
        (
            {"FRUITFLOW_EMR_SUBNET_IDS": "subnet-0a1b2c3d,subnet-4e5f6a7b"},
            "several subnets need instance fleets (FRUITFLOW_EMR_FLEETS)",
        ),
    ],
)
def test_bad_fleet_and_subnet_settings_are_refused(env, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        Settings.from_env(env)


def local_params(images: Path, results: Path, **overrides) -> dict:
    return {"images_uri": str(images), "results_uri": str(results), "variance": 0.95, "weights": "random",
            "batch_size": 64, "max_error_share": 0.05, "engine": "onnx", "full_refresh": False,
            **overrides}  # fmt: skip


def local_deployment(folder: Path) -> Settings:
    """The local target, its runs allowed under ``folder``: the test's own (FRUITFLOW_ALLOWED_URIS)."""
    return Settings(target=Target.LOCAL, allowed_uris=(str(folder),))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    (tmp_path / "images" / "Kiwi").mkdir(parents=True)
    (tmp_path / "images" / "Kiwi" / "1.jpg").write_bytes(b"jpeg")
    return tmp_path / "images"


def test_validated_local_run(image_folder, tmp_path):
    settings = local_deployment(tmp_path)
    params = local_params(f"file://{image_folder}/", tmp_path / "results")
    claimed = []
    run = validate_run(params, {}, settings, LocalStorage(), "v1", lambda results: claimed.append(results) or "K")
    assert claimed == [str(tmp_path / "results")] and run.key == "K"
    assert run.images_uri == str(image_folder)
    assert run.code_uri == f"{tmp_path}/results/_code/v1"
    assert (run.variance, run.weights, run.batch_size) == (0.95, "random", 64)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"results_uri": "{images}/out"}, "results_uri: .* must not contain one another"),
        ({"images_uri": "{tmp}/empty"}, r"images_uri: no \.jpg, \.jpeg, \.png files under .*empty, 0 other file"),
        ({"images_uri": "{tmp}/notes"}, r"images_uri: no \.jpg, \.jpeg, \.png files under .*notes, 3 other file"),
        ({"weights": "{tmp}/missing.h5"}, "weights: no file at"),
        ({"weights": "weights/mobilenet.h5"}, "weights: weights/mobilenet.h5 is a relative path"),
        ({"weights": "mobilenet.bin"}, "weights: mobilenet.bin must be 'imagenet', 'random' or a Keras .h5"),
    ],
)
def test_invalid_runs_name_the_field_and_claim_no_folder(image_folder, tmp_path, overrides, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes" / "Kiwi").mkdir(parents=True)
    for name in ("readme.txt", "Kiwi/photo.jpg.txt", "Kiwi/_hidden.jpg"):  # Spark's listing skips _hidden.jpg
        (tmp_path / "notes" / name).write_text("not an image")
    params = local_params(image_folder, tmp_path / "results")
    params |= {key: value.format(images=image_folder, tmp=tmp_path) for key, value in overrides.items()}
    with pytest.raises(InvalidParams, match=message):
        validate_run(params, {}, local_deployment(tmp_path), LocalStorage(), "v1", claim_key=pytest.fail)


def test_unknown_conf_keys_are_refused_naming_them_and_the_params(image_folder, tmp_path):
    params = local_params(image_folder, tmp_path / "results")
    conf = {"variance": 0.9, "varience": 0.8, "foo": 1}
    with pytest.raises(InvalidParams, match=r"conf: unknown key\(s\) foo, varience; the params are images_uri, "):
        validate_run(params, conf, local_deployment(tmp_path), LocalStorage(), "v1", claim_key=pytest.fail)


def test_code_bundle_holds_what_the_steps_and_bootstrap_need(tmp_path):
    version = code_version(ROOT / "spark_jobs")
    files = build_bundle(ROOT / "spark_jobs", tmp_path, version)
    assert sorted(path.name for path in files) == sorted(
        ["fruitflow.zip", "featurize.py", "pca.py", "export_csv.py", "bootstrap.sh", "requirements.txt",
         "constraints.txt", "requirements-lean.txt", "constraints-lean.txt"]
    )  # fmt: skip
    with zipfile.ZipFile(tmp_path / "fruitflow.zip") as archive:
        names = archive.namelist()
    assert {"fruitflow/__init__.py", "fruitflow/featurize.py", "fruitflow/pca.py"} <= set(names)
    assert not [name for name in names if "__pycache__" in name]
    assert code_version(ROOT / "spark_jobs") == version  # stable for unchanged code


def test_code_version_follows_the_content(tmp_path):
    import shutil

    jobs = tmp_path / "jobs"
    shutil.copytree(ROOT / "spark_jobs", jobs, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_version(jobs)
    (jobs / "fruitflow" / "pca.py").write_text((jobs / "fruitflow" / "pca.py").read_text() + "\n# changed\n")
    assert code_version(jobs) != before
    with pytest.raises(RuntimeError, match="changed since this run started"):
        build_bundle(jobs, tmp_path / "staging", before)


def write_outputs(
    run: PipelineRun, images: int, featurised: int, csv_rows: int, k: int = 2, exported_rows: int | None = None
) -> None:
    """The files a run's three jobs leave: ``csv_rows`` rows in the CSV; the export's metrics count
    ``exported_rows`` (as many by default) and the CSV's size as written."""
    storage = LocalStorage()
    featurize_metrics = FeaturizeMetrics(
        images=images,
        featurised=featurised,
        errors=images - featurised,
        model_rows=10,
        reused=images - 10,
        new=8,
        changed=2,
        removed=1,
        weights="random",
        engine="onnx",
        seconds=3.5,
    )
    storage.write_text(run.metrics_uri("featurize"), featurize_metrics.to_json())
    storage.write_text(run.metrics_uri("pca"), PcaMetrics(images=featurised, k=k, variance=0.93, seconds=1.5).to_json())
    explained = ExplainedVariance(
        k=k,
        variance_threshold=0.9,
        explained_variance=0.93,
        explained_variance_ratio=[0.6, 0.33],
        cumulative_explained_variance_ratio=[0.6, 0.93],
    )
    storage.write_text(run.explained_variance_uri, explained.to_json())
    header = ",".join(["path", "label", *[f"pc_{i}" for i in range(1, k + 1)]])
    rows = [f'"s3://b/Kiwi/{i},\nx.jpg",Kiwi' + ",0.5" * k for i in range(csv_rows)]  # quoted comma and newline
    storage.write_text(run.csv_uri, "\n".join([header, *rows]) + "\n")
    exported = ExportCsvMetrics(
        rows=csv_rows if exported_rows is None else exported_rows,
        components=k,
        bytes=storage.size(run.csv_uri),
        seconds=0.5,
    )
    storage.write_text(run.metrics_uri("export_csv"), exported.to_json())


class CsvRowsUnreadable(LocalStorage):
    """A store on which the CSV's rows cannot be read: only its size and first bytes."""

    def __init__(self, csv_uri: str):
        self.csv_uri = csv_uri
        self.head_reads: list[int] = []

    def read_head(self, uri: str, max_bytes: int) -> bytes:
        if uri == self.csv_uri:
            self.head_reads.append(max_bytes)
            assert max_bytes <= 64 * 1024, f"read {max_bytes} bytes of the CSV"
        return super().read_head(uri, max_bytes)

    def read_text(self, uri: str) -> str:
        assert uri != self.csv_uri, "the CSV was read whole"
        return super().read_text(uri)

    def read_bytes(self, uri: str) -> bytes:
        assert uri != self.csv_uri, "the CSV was read whole"
        return super().read_bytes(uri)


def local_run(tmp_path, max_error_share=0.05) -> PipelineRun:
    return PipelineRun("K", "/in", str(tmp_path), "v1", 0.9, "random", 64, max_error_share, "onnx")


LOCAL_TASKS = [
    "validate_params", "find_changes", "empty_run_folder", "upload_code", "featurize", "pca", "export_csv",
    "check_outputs",
]  # fmt: skip


def test_report_of_a_good_run(tmp_path):
    run = local_run(tmp_path)
    write_outputs(run, images=100, featurised=97, csv_rows=97)
    store = CsvRowsUnreadable(run.csv_uri)
    summary = summarise_outputs(run, store)
    assert len(store.head_reads) == 1  # the CSV's header, from its first bytes
    report = run_report(run, "local", dict.fromkeys(LOCAL_TASKS, "success"), {}, summary, {})
    assert report["status"] == "succeeded" and report["problems"] == [] and report["failed_task"] is None
    assert report["counts"] == {
        "images": 100, "featurised": 97, "errors": 3, "error_share": 0.03, "pca_rows": 97, "csv_rows": 97,
        "reused": 90, "new": 8, "changed": 2, "removed": 1, "through_network": 10,
    }  # fmt: skip
    assert report["pca"]["k"] == 2 and report["pca"]["csv_columns"] == 4
    assert report["csv"]["bytes"] == report["csv"]["bytes_written_by_export"] == Path(run.csv_uri).stat().st_size
    assert report["seconds"] == {"featurize": 3.5, "pca": 1.5, "export_csv": 0.5}
    assert report["outputs"]["csv"] == run.csv_uri
    assert json.loads(json.dumps(report)) == report


def cut_csv_short(run: PipelineRun) -> None:
    """The CSV loses its last row after export_csv wrote it (a partial copy, a truncated upload)."""
    csv_file = Path(run.csv_uri)
    csv_file.write_bytes(csv_file.read_bytes()[:-20])


def replace_header(run: PipelineRun) -> None:
    csv_file = Path(run.csv_uri)
    text = csv_file.read_text()
    csv_file.write_text(text.replace("path,label,pc_1,pc_2", "path,label,pc_1,pc_X", 1))


@pytest.mark.parametrize(
    ("featurised", "exported_rows", "tamper", "message"),
    [
        (97, 90, None, "the CSV has 90 rows but 97 images were featurised"),
        (90, None, None, r"10 of 100 images could not be featurised \(10.0% > the tolerated 5.0%\)"),
        (97, None, cut_csv_short, r"the CSV is [\d,]+ bytes but export_csv wrote [\d,]+: it was changed or cut short"),
        (
            97,
            None,
            replace_header,
            r"4 columns \(unexpected column 4: 'pc_X'\), expected path, label, pc_1..pc_2",
        ),
    ],
)
def test_bad_outputs_fail_the_check_and_the_report_lists_the_problem(
    tmp_path, featurised, exported_rows, tamper, message
):
    """Each check holds without reading the CSV's rows: the counts are the jobs' own, the CSV is
    checked by its size against what export_csv wrote and by its header."""
    run = local_run(tmp_path)
    write_outputs(run, images=100, featurised=featurised, csv_rows=featurised, exported_rows=exported_rows)
    if tamper:
        tamper(run)
    summary = summarise_outputs(run, CsvRowsUnreadable(run.csv_uri))
    problems = problems_in(summary, run.max_error_share)
    matching = [problem for problem in problems if re.search(message, problem)]
    assert len(matching) == 1, problems
    problem = matching[0]
    states = dict.fromkeys(LOCAL_TASKS, "success") | {"check_outputs": "failed"}
    report = run_report(run, "local", states, {"check_outputs": problem}, summary, {})
    assert report["status"] == "failed" and problem in report["problems"]
    assert (report["failed_task"], report["error"]) == ("check_outputs", problem)


def test_a_csv_without_a_header_line_in_its_first_bytes_fails_the_check(tmp_path):
    run = local_run(tmp_path)
    write_outputs(run, images=3, featurised=3, csv_rows=3)
    Path(run.csv_uri).write_text("x" * 70_000)
    summary = summarise_outputs(run, CsvRowsUnreadable(run.csv_uri))
    assert summary["pca"]["csv_columns"] == 0
    assert any("the CSV's header has 0 columns" in problem for problem in problems_in(summary, 0.05))


def test_a_failed_step_leaves_a_report_naming_it_with_the_counts_so_far(tmp_path):
    run = local_run(tmp_path)
    write_outputs(run, images=100, featurised=97, csv_rows=97)
    Path(run.metrics_uri("export_csv")).unlink()
    states = dict.fromkeys(LOCAL_TASKS, "success") | {"export_csv": "failed", "check_outputs": "upstream_failed"}
    error = "step export_csv failed with exit code 1: export_csv: error: PCA output /x does not exist (run pca first)"
    report = run_report(run, "local", states, {"export_csv": error}, None, steps_so_far(run, LocalStorage()))
    assert report["status"] == "failed"
    assert (report["failed_task"], report["error"]) == ("export_csv", error)
    assert report["tasks"]["check_outputs"] == "upstream_failed"
    assert set(report["steps_finished"]) == {"featurize", "pca"}
    assert report["steps_finished"]["featurize"]["featurised"] == 97 and report["steps_finished"]["pca"]["k"] == 2
