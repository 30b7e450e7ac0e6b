"""Throughput of the pipeline's Spark jobs against raw Keras and the course notebook's approach.

Everything is measured in one run on the same generated images (seed 0), with random
MobileNetV2 weights, and printed as a Markdown table (also written to --output):

1. raw in-process Keras, decode + preprocess + forward, with ``model.predict`` and with a
   compiled ``tf.function``, in a subprocess so TensorFlow's threads and memory stay there;
2. the featurise job run with spark-submit exactly as the local DAG runs it, at two sizes
   for its marginal rate;
3. the PCA and CSV jobs, and the three-job total at several sizes;
4. bench/reference_pipeline.py (the notebook's approach) on the same images.

    python bench/benchmark.py [--sizes 250,500,1000,2000] [--marginal 1000,3000] [--raw-images 1000]
                              [--reference-images 1000] [--skip-reference] [--output bench/results.md]
                              [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "spark_jobs"), str(ROOT / "plugins")]

from fruitflow.contract import ExportCsvMetrics  # noqa: E402
from fruitflow.sample_images import generate_images  # noqa: E402
from fruitflow_pipeline.code_bundle import build_bundle, code_version  # noqa: E402
from fruitflow_pipeline.run import PipelineRun  # noqa: E402
from fruitflow_pipeline.settings import LocalSettings  # noqa: E402
from fruitflow_pipeline.steps import PIPELINE, SparkStep, local_command  # noqa: E402

JOBS_DIR = ROOT / "spark_jobs"
REFERENCE_SCRIPT = ROOT / "bench" / "reference_pipeline.py"
BATCH_SIZE = 64
VARIANCE = 0.95
IMAGE_SEED = 0
MARGINAL_TARGET = 0.8  # featurise marginal rate / best raw Keras rate
SPEED_UP_TARGET = 6.0  # reference wall time / three-job wall time
FEATURIZE = PIPELINE[0]


# ---------------------------------------------------------------- raw Keras (runs in a subprocess)


def raw_keras_throughput(folder: Path) -> dict:
    """Seconds to decode, preprocess and featurise every JPEG under ``folder``, per forward pass.

    Bytes are read before the clock starts (the jobs read them through Spark). Each forward
    pass is warmed up on a full and on the last, shorter batch first, so no tracing is timed.
    """
    import keras
    import numpy as np
    import tensorflow as tf
    from keras.applications.mobilenet_v2 import preprocess_input

    from fruitflow.images import decode_image, to_model_input
    from fruitflow.model import FeatureExtractor, resolve_weights

    contents = [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))]
    batches = [contents[start : start + BATCH_SIZE] for start in range(0, len(contents), BATCH_SIZE)]
    extractor = FeatureExtractor(resolve_weights("random", fetch=None))

    def model_input(batch: list[bytes]) -> np.ndarray:
        return np.stack([to_model_input(decode_image(content)) for content in batch])

    forward_passes = {
        "predict": lambda pixels: extractor.model.predict(preprocess_input(pixels), batch_size=BATCH_SIZE, verbose=0),
        "compiled": extractor,  # preprocess_input, then its tf.function with input_signature [None, 224, 224, 3]
    }
    seconds = {}
    for name, forward in forward_passes.items():
        for warm_up in {len(batches[0]), len(batches[-1])}:
            forward(model_input(contents[:warm_up]))
        started = time.perf_counter()
        for batch in batches:
            forward(model_input(batch))
        seconds[name] = time.perf_counter() - started
    return {"images": len(contents), "seconds": seconds, "tensorflow": tf.__version__, "keras": keras.__version__}


# ---------------------------------------------------------------- measurements


@dataclass(frozen=True)
class RawResult:
    images: int
    predict_seconds: float
    compiled_seconds: float
    versions: str

    @property
    def predict_rate(self) -> float:
        return self.images / self.predict_seconds

    @property
    def compiled_rate(self) -> float:
        return self.images / self.compiled_seconds

    @property
    def best_rate(self) -> float:
        return max(self.predict_rate, self.compiled_rate)


@dataclass(frozen=True)
class JobTiming:
    images: int
    wall_seconds: float  # the whole spark-submit, JVM start included
    job_seconds: float  # the job's own metrics: from its Spark session to its summary

    @property
    def rate(self) -> float:
        return self.images / self.job_seconds


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of image counts") from None
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give image counts of at least 2 (PCA needs two rows)")
    return counts


def image_folder(workdir: Path, count: int) -> Path:
    """The ``count`` generated images, written on first use and reused by later runs."""
    folder = workdir / "images" / str(count)
    if len(list(folder.rglob("*.jpg"))) != count:
        shutil.rmtree(folder, ignore_errors=True)
        generate_images(folder, count, seed=IMAGE_SEED)
    return folder


def run_logged(command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``command`` with its output in ``log``; wall seconds, or RuntimeError with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as output:
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.monotonic() - started
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(map(str, command[:3]))}... exited with {code} (log: {log}):\n{tail}")
    return wall


def measure_raw(folder: Path, log: Path) -> RawResult:
    result_file = log.with_suffix(".json")
    run_logged([sys.executable, __file__, "--raw-only", str(folder), "--raw-result", str(result_file)], log)
    result = json.loads(result_file.read_text())
    return RawResult(
        images=result["images"],
        predict_seconds=result["seconds"]["predict"],
        compiled_seconds=result["seconds"]["compiled"],
        versions=f"TensorFlow {result['tensorflow']}, Keras {result['keras']}",
    )


def upload_code(results: Path) -> str:
    """The job code where the DAG uploads it (scripts and fruitflow.zip, flat); returns its version."""
    version = code_version(JOBS_DIR)
    code_dir = results / "_code" / version
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir(parents=True)
    build_bundle(JOBS_DIR, code_dir, version)
    return version


def pipeline_run(images: Path, results: Path, version: str, count: int) -> PipelineRun:
    return PipelineRun(
        key=f"images-{count}",
        images_uri=str(images),
        results_uri=str(results),
        code_version=version,
        variance=VARIANCE,
        weights="random",
        batch_size=BATCH_SIZE,
        max_error_share=0.0,
    )


def run_step(step: SparkStep, run: PipelineRun, logs: Path) -> JobTiming:
    """One step through spark-submit, with the command and environment the local DAG uses."""
    command, environment = local_command(step, run, LocalSettings())
    wall = run_logged(command, logs / f"{run.key}-{step.name}.log", env={**os.environ, **environment})
    metrics = step.metrics.from_json(Path(run.metrics_uri(step.name)).read_text())
    images = metrics.rows if isinstance(metrics, ExportCsvMetrics) else metrics.images
    return JobTiming(images=images, wall_seconds=wall, job_seconds=metrics.seconds)


def run_steps(steps: Sequence[SparkStep], run: PipelineRun, logs: Path) -> dict[str, JobTiming]:
    shutil.rmtree(run.uri, ignore_errors=True)
    return {step.name: run_step(step, run, logs) for step in steps}


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


# ---------------------------------------------------------------- arithmetic


def marginal_rate(smaller: JobTiming, larger: JobTiming) -> float | None:
    """Images per second the job adds per extra image, JVM and session start-up cancelled out."""
    extra_seconds = larger.job_seconds - smaller.job_seconds
    return (larger.images - smaller.images) / extra_seconds if extra_seconds > 0 else None


def three_job_wall(timings: dict[str, JobTiming]) -> float:
    return sum(timings[step.name].wall_seconds for step in PIPELINE)


# ---------------------------------------------------------------- Markdown


def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:,.2f}×"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    aligns = ["---"] + ["---:"] * (len(header) - 1)
    return [f"| {' | '.join(header)} |", f"| {' | '.join(aligns)} |", *(f"| {' | '.join(row)} |" for row in rows)]


def verdict(measured: float | None, target: float) -> str:
    if measured is None:
        return "not measured"
    return "met" if measured >= target else "**not met**"


@dataclass(frozen=True)
class Report:
    raw: RawResult
    pipelines: dict[int, dict[str, JobTiming]]  # image count -> step name -> timing
    headline: int  # the image count PCA/CSV and the reference comparison are shown at
    marginal: tuple[int, int]
    reference: JobTiming | None
    reference_metrics: dict | None

    def featurize(self, count: int) -> JobTiming:
        return self.pipelines[count][FEATURIZE.name]

    @property
    def marginal_rate(self) -> float | None:
        return marginal_rate(self.featurize(self.marginal[0]), self.featurize(self.marginal[1]))

    @property
    def speed_up(self) -> float | None:
        if self.reference is None:
            return None
        return self.reference.wall_seconds / three_job_wall(self.pipelines[self.headline])


def raw_section(raw: RawResult) -> list[str]:
    rows = [
        ["`model.predict` (batch 64)", number(raw.predict_seconds, 2), number(raw.predict_rate)],
        [
            "compiled `tf.function` (input_signature [None,224,224,3], batch 64)",
            number(raw.compiled_seconds, 2),
            number(raw.compiled_rate),
        ],
        ["**best**", "", f"**{number(raw.best_rate)}**"],
    ]
    return [
        f"## Raw in-process Keras: {raw.images:,} images, decode + preprocess + forward",
        "",
        f"Default TensorFlow threading, warmed up (no tracing timed), file bytes read beforehand; {raw.versions}.",
        "",
        *table(["forward pass", "seconds", "images/s"], rows),
    ]


def featurize_section(report: Report) -> list[str]:
    counts = sorted({count for count, steps in report.pipelines.items() if FEATURIZE.name in steps})
    rows = [
        [f"{count:,}", number(timing.wall_seconds), number(timing.job_seconds), number(timing.rate)]
        for count in counts
        for timing in [report.featurize(count)]
    ]
    small, large = report.marginal
    best = report.raw.best_rate
    rate = report.marginal_rate
    largest = report.featurize(large)
    ratios = [
        [f"marginal rate {small:,} → {large:,} images (job seconds)", f"{number(rate)} images/s"],
        ["marginal rate / best raw Keras", times(rate / best if rate else None)],
        [f"{large:,}-image job throughput / best raw Keras", times(largest.rate / best)],
    ]
    return [
        "## Featurise job (spark-submit as the local DAG runs it)",
        "",
        "Job seconds come from the job's metrics JSON: from its Spark session to its summary, JVM start excluded.",
        "",
        *table(["images", "spark-submit wall s", "job s", "images/s (job s)"], rows),
        "",
        *table(["", "value"], ratios),
    ]


def pca_csv_section(report: Report) -> list[str]:
    timings = report.pipelines[report.headline]
    rows = [
        [f"`{step.name}`", number(timings[step.name].wall_seconds), number(timings[step.name].job_seconds)]
        for step in PIPELINE[1:]
    ]
    return [f"## PCA and CSV jobs on {report.headline:,} images", "", *table(["job", "wall s", "job s"], rows)]


def growth_section(report: Report) -> list[str]:
    complete = sorted(count for count, steps in report.pipelines.items() if len(steps) == len(PIPELINE))
    rows = []
    for count in complete:
        timings = report.pipelines[count]
        total = three_job_wall(timings)
        walls = [number(timings[step.name].wall_seconds) for step in PIPELINE]
        rows.append([f"{count:,}", *walls, number(total), number(count / total)])
    header = ["images", *(f"{step.name} wall s" for step in PIPELINE), "total wall s", "images/s"]
    return ["## Three-job pipeline (sum of spark-submit wall times)", "", *table(header, rows)]


def reference_section(report: Report) -> list[str]:
    count = report.headline
    ours = three_job_wall(report.pipelines[count])
    ours_job = sum(timing.job_seconds for timing in report.pipelines[count].values())
    header = ["pipeline", "wall s", "job s", "images/s (wall)"]
    rows = [
        [
            "fruitflow: featurize + pca + export_csv (3 spark-submits)",
            number(ours),
            number(ours_job),
            number(count / ours),
        ]
    ]
    title = f"## Reference approach on {count:,} images (bench/reference_pipeline.py)"
    if report.reference is None:
        return [title, "", "Skipped (--skip-reference).", "", *table(header, rows)]
    reference, metrics = report.reference, report.reference_metrics
    rows.insert(
        0,
        [
            "reference: course notebook approach (1 spark-submit)",
            number(reference.wall_seconds),
            number(reference.job_seconds),
            number(count / reference.wall_seconds),
        ],
    )
    return [
        title,
        "",
        *table(header, rows),
        "",
        f"Speed-up (reference wall / fruitflow three-job wall): **{times(report.speed_up)}**. "
        f"The reference ran the network on {metrics['rows_featurised']:,} rows for {metrics['images']:,} images "
        f"(its uncached lineage is recomputed by every action); PCA kept k = {metrics['k']}.",
    ]


def targets_section(report: Report) -> list[str]:
    best = report.raw.best_rate
    share = report.marginal_rate / best if report.marginal_rate else None
    rows = [
        [
            f"featurise marginal rate ≥ {MARGINAL_TARGET} × best raw Keras",
            times(share),
            verdict(share, MARGINAL_TARGET),
        ],
        [
            f"three-job pipeline ≥ {SPEED_UP_TARGET:g}× faster than the reference on {report.headline:,} images",
            times(report.speed_up),
            verdict(report.speed_up, SPEED_UP_TARGET),
        ],
    ]
    return ["## Targets", "", *table(["target", "measured", "status"], rows)]


def render(report: Report, started: datetime) -> str:
    header = (
        f"{started:%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}) · "
        f"measured in one run on the same generated images (seed {IMAGE_SEED}), random MobileNetV2 weights, "
        f"Spark `{LocalSettings().spark_master}`, driver memory {LocalSettings().driver_memory}"
    )
    sections = [
        raw_section(report.raw),
        featurize_section(report),
        pca_csv_section(report),
        growth_section(report),
        reference_section(report),
        targets_section(report),
    ]
    lines = ["# fruitflow benchmark", "", header]
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/benchmark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_counts,
        default=(250, 500, 1000, 2000),
        help="image counts for the three-job pipeline (default 250,500,1000,2000)",
    )
    parser.add_argument(
        "--marginal",
        type=parse_counts,
        default=(1000, 3000),
        help="two image counts for the featurise job's marginal rate (default 1000,3000)",
    )
    parser.add_argument("--raw-images", type=int, default=1000, help="images for raw Keras (default %(default)s)")
    parser.add_argument(
        "--reference-images",
        type=int,
        default=1000,
        help="images for the reference comparison, PCA and CSV (default %(default)s)",
    )
    parser.add_argument("--skip-reference", action="store_true", help="do not run the reference pipeline")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md", help="Markdown file to write")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "build" / "bench",
        help="generated images (kept between runs), code, results and logs (default build/bench)",
    )
    parser.add_argument("--raw-only", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--raw-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.raw_only and len(args.marginal) != 2:
        parser.error("--marginal takes exactly two image counts, such as 1000,3000")
    if not args.raw_only and args.marginal[0] >= args.marginal[1]:
        parser.error("--marginal: the second count must be larger than the first")
    return args


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def benchmark(args: argparse.Namespace) -> Report:
    workdir = args.workdir.resolve()
    logs, results = workdir / "logs", workdir / "results"
    headline = args.reference_images
    full_counts = sorted({*args.sizes, headline})
    featurize_only = sorted(set(args.marginal) - set(full_counts))
    counts = sorted({*full_counts, *featurize_only, args.raw_images})

    progress(f"generating images ({', '.join(map(str, counts))}) under {workdir / 'images'}")
    folders = {count: image_folder(workdir, count) for count in counts}
    version = upload_code(results)

    progress(f"raw Keras on {args.raw_images} images (subprocess)")
    raw = measure_raw(folders[args.raw_images], logs / f"raw-{args.raw_images}.log")

    pipelines = {}
    for count in [*full_counts, *featurize_only]:
        steps = PIPELINE if count in full_counts else (FEATURIZE,)
        progress(f"{' + '.join(step.name for step in steps)} on {count} images")
        pipelines[count] = run_steps(steps, pipeline_run(folders[count], results, version, count), logs)

    reference = reference_metrics = None
    if not args.skip_reference:
        progress(f"reference pipeline on {headline} images")
        run = pipeline_run(folders[headline], results, version, headline)
        reference, reference_metrics = run_reference(run, results / f"reference-{headline}", logs)
    return Report(raw, pipelines, headline, tuple(args.marginal), reference, reference_metrics)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_only:
        args.raw_result.write_text(json.dumps(raw_keras_throughput(args.raw_only)))
        return 0
    started = datetime.now(UTC)
    try:
        report = benchmark(args)
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    markdown = render(report, started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    print(markdown)
    progress(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
