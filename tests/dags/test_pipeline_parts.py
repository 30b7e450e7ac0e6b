"""The Airflow side's pure parts: settings, run folders, the shared step list, the cluster request,
param validation, the code bundle and the output checks."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fruitflow.contract import ExplainedVariance, ExportCsvMetrics, FeaturizeMetrics, PcaMetrics
from fruitflow_pipeline.cluster import ClusterShape, job_flow_spec
from fruitflow_pipeline.code_bundle import build_bundle, code_version
from fruitflow_pipeline.params import InvalidParams, validate_run
from fruitflow_pipeline.report import OutputCheckFailed, check_and_write_report
from fruitflow_pipeline.run import PipelineRun, run_key
from fruitflow_pipeline.settings import EmrSettings, LocalSettings, SettingError, Settings, Target
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
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(SettingError, match=message):
        Settings.from_env(env)


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
    emr = EmrSettings(subnet_id="subnet-123", idle_timeout_seconds=1800)
    spec = job_flow_spec(RUN, SHAPE, emr)
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
        "Args": [f"{RUN.code_uri}/requirements.txt", "/usr/bin/python3.11"],
    }
    spark_env = next(c for c in spec["Configurations"] if c["Classification"] == "spark-env")
    assert spark_env["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert (spec["ServiceRole"], spec["JobFlowRole"]) == ("EMR_DefaultRole", "EMR_EC2_DefaultRole")
    tags = {tag["Key"]: tag["Value"] for tag in spec["Tags"]}
    assert tags["fruitflow-run"] == RUN.key and tags["fruitflow-code"] == "abc123"


def test_no_task_group_without_task_nodes():
    shape = ClusterShape("emr-7.10.0", "m5.xlarge", "m5.2xlarge", 2, "m5.2xlarge", 0, "SPOT")
    roles = [group["InstanceRole"] for group in job_flow_spec(RUN, shape, EmrSettings())["Instances"]["InstanceGroups"]]
    assert roles == ["MASTER", "CORE"]


def local_params(images: Path, results: Path, **overrides) -> dict:
    return {"images_uri": str(images), "results_uri": str(results), "variance": 0.95, "weights": "random",
            "batch_size": 64, "max_error_share": 0.05, **overrides}  # fmt: skip


@pytest.fixture
def image_folder(tmp_path) -> Path:
    (tmp_path / "images" / "Kiwi").mkdir(parents=True)
    (tmp_path / "images" / "Kiwi" / "1.jpg").write_bytes(b"jpeg")
    return tmp_path / "images"


def test_validated_local_run(image_folder, tmp_path):
    settings = Settings(target=Target.LOCAL)
    params = local_params(f"file://{image_folder}/", tmp_path / "results")
    run = validate_run(params, settings, LocalStorage(), "K", "v1").run
    assert run.images_uri == str(image_folder)
    assert run.code_uri == f"{tmp_path}/results/_code/v1"
    assert (run.variance, run.weights, run.batch_size) == (0.95, "random", 64)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"results_uri": "{images}/out"}, "results_uri: .* must not contain one another"),
        ({"images_uri": "{tmp}/empty"}, "images_uri: no files under"),
        ({"weights": "{tmp}/missing.h5"}, "weights: no file at"),
    ],
)
def test_invalid_runs_name_the_field(image_folder, tmp_path, overrides, message):
    (tmp_path / "empty").mkdir()
    params = local_params(image_folder, tmp_path / "results")
    params |= {key: value.format(images=image_folder, tmp=tmp_path) for key, value in overrides.items()}
    with pytest.raises(InvalidParams, match=message):
        validate_run(params, Settings(target=Target.LOCAL), LocalStorage(), "K", "v1")


def test_code_bundle_holds_what_the_steps_and_bootstrap_need(tmp_path):
    version = code_version(ROOT / "spark_jobs")
    files = build_bundle(ROOT / "spark_jobs", tmp_path, version)
    assert sorted(path.name for path in files) == sorted(
        ["fruitflow.zip", "featurize.py", "pca.py", "export_csv.py", "bootstrap.sh", "requirements.txt"]
    )
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


def write_outputs(run: PipelineRun, images: int, featurised: int, csv_rows: int, k: int = 2) -> None:
    storage = LocalStorage()
    featurize_metrics = FeaturizeMetrics(
        images=images,
        featurised=featurised,
        errors=images - featurised,
        model_rows=images,
        weights="random",
        seconds=3.5,
    )
    storage.write_text(run.metrics_uri("featurize"), featurize_metrics.to_json())
    storage.write_text(run.metrics_uri("pca"), PcaMetrics(images=featurised, k=k, variance=0.93, seconds=1.5).to_json())
    storage.write_text(
        run.metrics_uri("export_csv"), ExportCsvMetrics(rows=csv_rows, components=k, seconds=0.5).to_json()
    )
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


def local_run(tmp_path, max_error_share=0.05) -> PipelineRun:
    return PipelineRun("K", "/in", str(tmp_path), "v1", 0.9, "random", 64, max_error_share)


def test_report_of_a_good_run(tmp_path):
    run = local_run(tmp_path)
    write_outputs(run, images=100, featurised=97, csv_rows=97)
    report = check_and_write_report(run, LocalStorage(), "local")
    written = json.loads(Path(run.report_uri).read_text())
    assert written == json.loads(json.dumps(report))
    assert written["status"] == "succeeded" and written["problems"] == []
    assert written["counts"] == {"images": 100, "featurised": 97, "errors": 3, "error_share": 0.03, "csv_rows": 97}
    assert written["pca"]["k"] == 2 and written["pca"]["csv_columns"] == 4
    assert written["seconds"] == {"featurize": 3.5, "pca": 1.5, "export_csv": 0.5}
    assert written["outputs"]["csv"] == run.csv_uri


@pytest.mark.parametrize(
    ("featurised", "csv_rows", "message"),
    [
        (97, 90, "the CSV has 90 rows but 97 images were featurised"),
        (90, 90, r"10 of 100 images could not be featurised \(10.0% > the tolerated 5.0%\)"),
    ],
)
def test_bad_outputs_fail_the_check_but_still_leave_a_report(tmp_path, featurised, csv_rows, message):
    run = local_run(tmp_path)
    write_outputs(run, images=100, featurised=featurised, csv_rows=csv_rows)
    with pytest.raises(OutputCheckFailed, match=message):
        check_and_write_report(run, LocalStorage(), "local")
    written = json.loads(Path(run.report_uri).read_text())
    assert written["status"] == "failed" and len(written["problems"]) == 1
