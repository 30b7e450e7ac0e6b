"""The DAG/job boundary without Spark: every step's command line, as each target submits it,
parses with the job's own parser into exactly the arguments the DAG meant; what a job's
metrics file holds is what the report reads."""

from __future__ import annotations

import ast
from dataclasses import fields
from importlib import import_module
from pathlib import Path
from typing import get_type_hints

import pytest

from fruitflow.contract import ExplainedVariance, FeaturizeArguments, FeaturizeMetrics
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.steps import PIPELINE, emr_step, local_command, step_named

RUNS = {
    "emr": PipelineRun(
        "20261125T020000Z",
        "s3://fruits/images",
        "s3://fruits/results",
        "abc123",
        0.9,
        "s3://w/m.h5",
        32,
        0.05,
        "onnx",
        64,
    ),
    "local": PipelineRun(
        "20261125T020000Z", "/data/images", "/data/results", "abc123", 0.95, "random", 64, 0.05, "tensorflow"
    ),
}


def job_command_line(step, run: PipelineRun, target: str) -> list[str]:
    """What the job's script receives: the submitted command after the script's URI."""
    if target == "emr":
        command = emr_step(step, run)["HadoopJarStep"]["Args"]
    else:
        command, _ = local_command(step, run, LocalSettings(spark_submit="/opt/spark/bin/spark-submit"))
    return command[command.index(f"{run.code_uri}/{step.script}") + 1 :]


@pytest.mark.parametrize("target", ["emr", "local"])
@pytest.mark.parametrize("step", PIPELINE, ids=lambda step: step.name)
def test_each_step_parses_with_its_jobs_own_parser(step, target):
    run = RUNS[target]
    job = import_module(f"fruitflow.{step.name}")
    parsed = job.ARGUMENTS.parse(job_command_line(step, run, target))
    assert parsed == step.arguments(run)
    assert parsed.metrics == run.metrics_uri(step.name)


@pytest.mark.parametrize("step", PIPELINE, ids=lambda step: step.name)
def test_each_step_reads_the_metrics_its_job_writes(step):
    job = import_module(f"fruitflow.{step.name}")
    assert get_type_hints(job.run)["return"] is step.metrics
    assert job.ARGUMENTS.job == step.name and step.script == f"{step.name}.py"


@pytest.mark.parametrize("step", PIPELINE, ids=lambda step: step.name)
def test_each_job_reads_only_arguments_its_contract_declares(step):
    """A flag renamed in the contract but not where the job body reads it fails here, not in Spark."""
    job = import_module(f"fruitflow.{step.name}")
    tree = ast.parse(Path(job.__file__).read_text())
    read = {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "args"
    }
    declared = {spec.name for spec in fields(job.ARGUMENTS)}
    assert read and read <= declared, read - declared


INPUTS_AND_KNOBS = {
    "images", "features", "pca", "weights", "variance", "batch_size", "partitions", "engine", "model_cache",
    "previous_features", "previous_errors",
}  # fmt: skip


def test_every_path_the_dag_reads_is_an_argument_of_the_job_that_writes_it():
    run = RUNS["local"]
    written = {
        value
        for step in PIPELINE
        for name, value in vars(step.arguments(run)).items()
        # Inputs and knobs; the model cache is the featurize job's own, read by no one else.
        if name not in INPUTS_AND_KNOBS
    }
    assert {run.features_uri, run.errors_uri, run.pca_uri, run.csv_uri, run.explained_variance_uri, run.plot_uri,
            run.scatter_uri, *(run.metrics_uri(step.name) for step in PIPELINE)} == written  # fmt: skip


def test_metrics_and_explained_variance_round_trip_and_refuse_a_missing_key():
    metrics = FeaturizeMetrics(
        images=3, featurised=2, errors=1, model_rows=3, reused=0, new=3, changed=0, removed=0, weights="random",
        engine="onnx",
    ).timed(1.234)  # fmt: skip
    assert FeaturizeMetrics.from_json(metrics.to_json()) == metrics and metrics.seconds == 1.23
    assert metrics.summary() == (
        "images=3 featurised=2 errors=1 model_rows=3 reused=0 new=3 changed=0 removed=0 weights=random engine=onnx "
        "seconds=1.23"
    )
    explained = ExplainedVariance(
        k=1,
        variance_threshold=0.5,
        explained_variance=0.7,
        explained_variance_ratio=[0.7, 0.3],
        cumulative_explained_variance_ratio=[0.7, 1.0],
    )
    assert ExplainedVariance.from_json(explained.to_json()) == explained
    with pytest.raises(KeyError, match="model_rows"):
        FeaturizeMetrics.from_json('{"images": 3, "featurised": 2, "errors": 1, "weights": "random", "seconds": 1}')


def test_defaults_and_required_flags_come_from_the_contract(capsys):
    parsed = FeaturizeArguments.parse(["--images", "/i", "--output", "/f", "--errors", "/e"])
    assert (parsed.weights, parsed.batch_size, parsed.partitions, parsed.metrics) == ("imagenet", 16, None, None)
    with pytest.raises(SystemExit):
        FeaturizeArguments.parse(["--images", "/i", "--output", "/f"])
    assert "the following arguments are required: --errors" in capsys.readouterr().err


def test_an_unknown_step_name_says_which_steps_exist():
    with pytest.raises(KeyError, match="the steps are featurize, pca, export_csv"):
        step_named("featurise")
