"""How long the course notebook's approach (bench/reference_pipeline.py) takes on the same images,
with the jobs' Spark options and environment."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fruitflow_bench import ROOT
from fruitflow_bench.commands import run_logged
from fruitflow_bench.jobs import FEATURIZE, JobTiming
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.steps import local_command

REFERENCE_SCRIPT = ROOT / "bench" / "reference_pipeline.py"


def run_reference(run: PipelineRun, output: Path, logs: Path) -> tuple[JobTiming, dict]:
    """bench/reference_pipeline.py on the run's images, with the jobs' Spark options and environment."""
    shutil.rmtree(output, ignore_errors=True)
    metrics_file = output.with_suffix(".json")
    command, environment = local_command(FEATURIZE, run, LocalSettings())
    spark_options = command[: command.index("--py-files")]
    command = [*spark_options, str(REFERENCE_SCRIPT), run.images_uri, str(output), "--metrics", str(metrics_file)]
    wall = run_logged(command, logs / f"{output.name}.log", env={**os.environ, **environment})
    metrics = json.loads(metrics_file.read_text())
    return JobTiming(images=metrics["images"], wall_seconds=wall, job_seconds=metrics["seconds"]), metrics
