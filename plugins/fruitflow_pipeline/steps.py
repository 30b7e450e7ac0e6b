"""The pipeline's Spark steps, written once: EMR steps and local spark-submit commands both come from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fruitflow.contract import (
    ONNX_MODEL_ENGINES,
    ExportCsvArguments,
    ExportCsvMetrics,
    FeaturizeArguments,
    FeaturizeMetrics,
    JobArguments,
    JobMetrics,
    PcaArguments,
    PcaMetrics,
)
from fruitflow_pipeline.run import PipelineRun, join_uri
from fruitflow_pipeline.settings import LocalSettings

CODE_PACKAGE = "fruitflow.zip"


@dataclass(frozen=True)
class SparkStep:
    name: str
    script: str
    arguments: Callable[[PipelineRun], JobArguments]
    metrics: type[JobMetrics]

    def submit_arguments(self, run: PipelineRun) -> list[str]:
        """What follows ``spark-submit`` and its Spark options: the code and the job's own arguments."""
        return ["--py-files", join_uri(run.code_uri, CODE_PACKAGE), join_uri(run.code_uri, self.script),
                *self.arguments(run).to_argv()]  # fmt: skip


def _featurize_arguments(run: PipelineRun) -> FeaturizeArguments:
    return FeaturizeArguments(
        images=run.images_uri,
        output=run.features_uri,
        errors=run.errors_uri,
        weights=run.weights,
        batch_size=run.batch_size,
        partitions=run.partitions,
        engine=run.engine,
        model_cache=run.model_cache_uri if run.engine in ONNX_MODEL_ENGINES else None,
        previous_features=run.previous_features_uri,
        previous_errors=run.previous_errors_uri,
        metrics=run.metrics_uri("featurize"),
    )


def _pca_arguments(run: PipelineRun) -> PcaArguments:
    return PcaArguments(
        features=run.features_uri,
        output=run.pca_uri,
        explained_variance=run.explained_variance_uri,
        plot=run.plot_uri,
        scatter=run.scatter_uri,
        variance=run.variance,
        metrics=run.metrics_uri("pca"),
    )


def _export_csv_arguments(run: PipelineRun) -> ExportCsvArguments:
    return ExportCsvArguments(pca=run.pca_uri, output=run.csv_uri, metrics=run.metrics_uri("export_csv"))


PIPELINE = (
    SparkStep("featurize", "featurize.py", _featurize_arguments, FeaturizeMetrics),
    SparkStep("pca", "pca.py", _pca_arguments, PcaMetrics),
    SparkStep("export_csv", "export_csv.py", _export_csv_arguments, ExportCsvMetrics),
)


def step_named(name: str) -> SparkStep:
    for step in PIPELINE:
        if step.name == name:
            return step
    raise KeyError(f"no pipeline step named {name!r}; the steps are {', '.join(step.name for step in PIPELINE)}")


def emr_step(step: SparkStep, run: PipelineRun) -> dict:
    """An EMR step running ``step`` with the cluster's spark-submit, driver on the primary node.

    CANCEL_AND_WAIT: a failed step cancels the ones after it and leaves the cluster to the
    DAG's teardown, which reads the failure first.
    """
    return {
        "Name": step.name,
        "ActionOnFailure": "CANCEL_AND_WAIT",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["spark-submit", "--deploy-mode", "client", *step.submit_arguments(run)],
        },
    }


def default_spark_submit() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


def local_command(step: SparkStep, run: PipelineRun, local: LocalSettings) -> tuple[list[str], dict[str, str]]:
    """``spark-submit`` command line and environment running ``step`` on local Spark.

    The environment names the interpreter explicitly: otherwise Spark's Python workers
    start whatever ``python3`` is first on PATH, which lacks the project's packages.
    """
    spark_submit = local.spark_submit or default_spark_submit()
    command = [
        spark_submit,
        "--master", local.spark_master,
        "--driver-memory", local.driver_memory,
        *(["--driver-java-options", local.driver_java_options] if local.driver_java_options else []),
        "--conf", "spark.ui.showConsoleProgress=false",
        "--conf", "spark.log.level=WARN",  # Spark's INFO lines would bury the job's own log in the task log
        *step.submit_arguments(run),
    ]  # fmt: skip
    environment = {
        "PYSPARK_PYTHON": local.python,
        "PYSPARK_DRIVER_PYTHON": local.python,
        "SPARK_HOME": str(Path(spark_submit).resolve().parents[1]),
    }
    return command, environment
