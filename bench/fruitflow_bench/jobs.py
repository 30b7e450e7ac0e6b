"""How fast the Spark jobs run through spark-submit as the local DAG runs them, what their
start-up costs, and how much memory the featurize job's process tree holds."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fruitflow.contract import (
    DEFAULT_ENGINE,
    ONNX_MODEL_ENGINES,
    WEIGHTS_RANDOM,
    ExportCsvMetrics,
    FeaturizeMetrics,
)
from fruitflow_bench import ROOT
from fruitflow_bench.commands import run_logged
from fruitflow_bench.memory import PeakMemory
from fruitflow_bench.workload import BATCH_SIZE
from fruitflow_pipeline.code_bundle import build_bundle, code_version
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.steps import PIPELINE, SparkStep, local_command

JOBS_DIR = ROOT / "spark_jobs"
VARIANCE = 0.95
FEATURIZE = PIPELINE[0]


@dataclass(frozen=True)
class JobTiming:
    images: int
    wall_seconds: float  # the whole spark-submit, JVM start included
    job_seconds: float  # the job's own metrics: from its Spark session to its summary
    converted_model: bool = False  # the onnx or openvino engine converted the network: its model cache was cold

    @property
    def rate(self) -> float:
        return self.images / self.job_seconds


@dataclass(frozen=True)
class MemoryResult:
    engine: str
    timing: JobTiming
    peak: PeakMemory


def upload_code(results: Path) -> str:
    """The job code where the DAG uploads it (scripts and fruitflow.zip, flat); returns its version."""
    version = code_version(JOBS_DIR)
    code_dir = results / "_code" / version
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir(parents=True)
    build_bundle(JOBS_DIR, code_dir, version)
    return version


def pipeline_run(images: Path, results: Path, version: str, key: str, engine: str = DEFAULT_ENGINE) -> PipelineRun:
    """A run of the benchmark's images; every run shares ``results``, and with it one model cache."""
    return PipelineRun(
        key=key,
        images_uri=str(images),
        results_uri=str(results),
        code_version=version,
        variance=VARIANCE,
        weights=WEIGHTS_RANDOM,
        batch_size=BATCH_SIZE,
        max_error_share=0.0,
        engine=engine,
    )


def converted_model(log: Path) -> bool:
    """Whether the job's driver converted the network (onnx_model's log line) rather than reading its cache."""
    return "converted MobileNetV2 to ONNX" in log.read_text(errors="replace")


def run_step(step: SparkStep, run: PipelineRun, logs: Path, peak: PeakMemory | None = None) -> JobTiming:
    """One step through spark-submit, with the command and environment the local DAG uses."""
    command, environment = local_command(step, run, LocalSettings())
    log = logs / f"{run.key}-{step.name}.log"
    wall = run_logged(command, log, env={**os.environ, **environment}, peak=peak)
    metrics = step.metrics.from_json(Path(run.metrics_uri(step.name)).read_text())
    if isinstance(metrics, FeaturizeMetrics) and metrics.engine != run.engine:
        raise RuntimeError(f"featurize ran engine {metrics.engine!r}, not the {run.engine!r} asked for (log: {log})")
    images = metrics.rows if isinstance(metrics, ExportCsvMetrics) else metrics.images
    converted = step is FEATURIZE and run.engine in ONNX_MODEL_ENGINES and converted_model(log)
    return JobTiming(images=images, wall_seconds=wall, job_seconds=metrics.seconds, converted_model=converted)


def run_steps(steps: Sequence[SparkStep], run: PipelineRun, logs: Path) -> dict[str, JobTiming]:
    shutil.rmtree(run.uri, ignore_errors=True)
    return {step.name: run_step(step, run, logs) for step in steps}


def warm_up(run: PipelineRun, logs: Path) -> None:
    """An untimed featurize, so the timed runs find the engine's model cache filled (onnx, openvino) and the
    OS's file cache holding the libraries (every engine)."""
    run_steps([FEATURIZE], run, logs)
    if run.engine in ONNX_MODEL_ENGINES and not any(Path(run.model_cache_uri).glob("*.onnx")):
        raise RuntimeError(f"no converted model under {run.model_cache_uri} after the warm-up run (logs: {logs})")


def measure_memory(run: PipelineRun, logs: Path) -> MemoryResult:
    shutil.rmtree(run.uri, ignore_errors=True)
    peak = PeakMemory()
    return MemoryResult(engine=run.engine, timing=run_step(FEATURIZE, run, logs, peak), peak=peak)


def marginal_rate(smaller: JobTiming, larger: JobTiming) -> float | None:
    """Images per second the job adds per extra image, JVM and session start-up cancelled out."""
    extra_seconds = larger.job_seconds - smaller.job_seconds
    return (larger.images - smaller.images) / extra_seconds if extra_seconds > 0 else None


def start_up(seconds: float, images: int, rate: float | None) -> float | None:
    """What a run costs besides its images: its seconds less its images at the marginal rate."""
    return None if rate is None else seconds - images / rate


def three_job_wall(timings: dict[str, JobTiming]) -> float:
    return sum(timings[step.name].wall_seconds for step in PIPELINE)
