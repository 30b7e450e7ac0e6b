"""Throughput, start-up and memory of the pipeline's Spark jobs against raw in-process engines
and the course notebook's approach.

Everything is measured in one run on the same generated images (seed 0), with random
MobileNetV2 weights, and printed as a Markdown report (also written to --output):

1. raw in-process TensorFlow (``model.predict`` and a compiled ``tf.function``) and raw ONNX
   Runtime (the network converted by tf2onnx), decode + preprocess + forward on the same
   batches with the same threads, each engine in its own subprocess so that its threads and
   memory stay there;
2. the featurize job run with spark-submit exactly as the local DAG runs it, with each engine
   at two sizes: its marginal rate and its warm start-up (the small run's seconds less its
   images at the marginal rate), after an untimed run per engine has filled the model cache;
3. the peak resident memory of the featurize job's whole process tree (default engine);
4. the PCA and CSV jobs, and the three-job total at several sizes (default engine);
5. bench/reference_pipeline.py (the notebook's approach) on the same images.

    python bench/benchmark.py [--sizes 250,500,1000,2000] [--marginal 1000,10000] [--raw-images 1000]
                              [--raw-threads 2] [--memory-images 10000] [--nightly-images 2000]
                              [--reference-images 1000]
                              [--skip-reference] [--output bench/results.md] [--workdir DIR]
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
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "spark_jobs"), str(ROOT / "plugins"), str(ROOT / "scripts")]

from demo import airflow_environment, run_dag  # noqa: E402

from fruitflow.contract import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    ENGINE_ONNX,
    ENGINE_TENSORFLOW,
    ENGINES,
    WEIGHTS_RANDOM,
    ExportCsvMetrics,
    FeaturizeMetrics,
    positive_int,
)
from fruitflow.onnx_model import OPSET, installed_version  # noqa: E402
from fruitflow.sample_images import generate_images  # noqa: E402
from fruitflow_pipeline.code_bundle import build_bundle, code_version  # noqa: E402
from fruitflow_pipeline.run import PipelineRun  # noqa: E402
from fruitflow_pipeline.settings import LocalSettings  # noqa: E402
from fruitflow_pipeline.steps import PIPELINE, SparkStep, local_command  # noqa: E402

JOBS_DIR = ROOT / "spark_jobs"
REFERENCE_SCRIPT = ROOT / "bench" / "reference_pipeline.py"
BATCH_SIZE = DEFAULT_BATCH_SIZE  # what every run gets unless its trigger says otherwise
VARIANCE = 0.95
IMAGE_SEED = 0
MARGINAL_TARGET = 0.8  # featurize marginal rate (default engine) / raw ONNX Runtime rate
START_UP_TARGET = 20.0  # seconds: the small run's spark-submit wall less its images at the marginal rate
MEMORY_TARGET_MB = 2500.0  # peak resident memory of the featurize job's process tree (2.5 GB)
SPEED_UP_TARGET = 6.0  # reference wall time / three-job wall time
MEMORY_SAMPLE_SECONDS = 0.2
FEATURIZE = PIPELINE[0]
ENGINE_NAMES = {ENGINE_ONNX: "ONNX Runtime", ENGINE_TENSORFLOW: "TensorFlow"}
# The raw forward passes, by the key the subprocess reports them under, as the report names them.
FORWARD_PASSES = {
    "predict": f"TensorFlow `model.predict` (batch {BATCH_SIZE})",
    "compiled": f"TensorFlow compiled `tf.function` (input_signature [None,224,224,3], batch {BATCH_SIZE})",
    "onnxruntime": f"ONNX Runtime `InferenceSession.run` (tf2onnx, opset {OPSET}, batch {BATCH_SIZE})",
}
# What TensorFlow's speed depends on most: the vector and matrix instructions oneDNN can use.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx")
VERSIONED = {  # the report's name -> distributions that may provide it
    "TensorFlow": ("tensorflow", "tensorflow-cpu"),
    "Keras": ("keras",),
    "ONNX Runtime": ("onnxruntime",),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
}


# ---------------------------------------------------------------- raw engines (each runs in a subprocess)


def tensorflow_forward_passes(threads: int) -> dict[str, Callable]:
    """Keras' ``predict`` and the job's compiled forward pass, on one pool of ``threads``."""
    from fruitflow.model import FeatureExtractor, configure_tensorflow_threads, resolve_weights

    # As the job's Python workers do, and before TensorFlow's runtime starts: both passes get it.
    configure_tensorflow_threads(threads)
    from keras.applications.mobilenet_v2 import preprocess_input

    extractor = FeatureExtractor(resolve_weights(WEIGHTS_RANDOM, fetch=None))
    return {
        "predict": lambda pixels: extractor.model.predict(preprocess_input(pixels), batch_size=BATCH_SIZE, verbose=0),
        "compiled": extractor,  # numpy preprocess_input, then its tf.function with input_signature [None, 224, 224, 3]
    }


def onnx_forward_passes(threads: int) -> dict[str, Callable]:
    """The job's ONNX Runtime session (intra-op ``threads``, inter-op 1) on the converted network."""
    from fruitflow.onnx_model import OnnxFeatureExtractor, onnx_model

    # Converted here, before any clock starts: the job converts once per model cache, not per run.
    model = onnx_model(WEIGHTS_RANDOM, weights_file=None, cache=None)
    return {"onnxruntime": OnnxFeatureExtractor(model, threads)}


RAW_ENGINES = {ENGINE_TENSORFLOW: tensorflow_forward_passes, ENGINE_ONNX: onnx_forward_passes}


def raw_throughput(folder: Path, engine: str, threads: int) -> dict:
    """Seconds to decode, preprocess and featurise every JPEG under ``folder``, per forward pass.

    Bytes are read before the clock starts (the jobs read them through Spark). Each forward
    pass is warmed up on a full and on the last, shorter batch first, so no tracing is timed.
    """
    import numpy as np

    from fruitflow.images import decode_image, to_model_input

    contents = [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))]
    batches = [contents[start : start + BATCH_SIZE] for start in range(0, len(contents), BATCH_SIZE)]
    forward_passes = RAW_ENGINES[engine](threads)

    def model_input(batch: list[bytes]) -> np.ndarray:
        return np.stack([to_model_input(decode_image(content)) for content in batch])

    seconds = {}
    for name, forward in forward_passes.items():
        for warm_up in {len(batches[0]), len(batches[-1])}:
            forward(model_input(contents[:warm_up]))
        started = time.perf_counter()
        for batch in batches:
            forward(model_input(batch))
        seconds[name] = time.perf_counter() - started
    return {"engine": engine, "images": len(contents), "threads": threads, "seconds": seconds}


# ---------------------------------------------------------------- process-tree memory (Linux /proc)


def child_processes() -> dict[int, list[int]]:
    """Every process's children, from the parent pid in ``/proc/<pid>/stat``."""
    children = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited since the listing
        # The command name (field 2) may hold spaces and parentheses: state and ppid follow its last ')'.
        parent = int(text[text.rindex(")") + 1 :].split()[1])
        children[parent].append(int(stat.parent.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants: spark-submit's JVM, the Python driver, the PySpark daemon
    and the workers it forks."""
    children, tree, index = child_processes(), [root], 0
    while index < len(tree):
        tree += children.get(tree[index], [])
        index += 1
    return tree


def resident_memory(pid: int) -> tuple[str, int] | None:
    """The process's name and resident bytes (VmRSS), or None for a process that holds no memory:
    exited, or a zombie (spark-class's exited launcher subshell, which the JVM never reaps)."""
    name, resident = "?", None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Name:"):
                name = line.split(maxsplit=1)[1]
            elif line.startswith("VmRSS:"):
                resident = int(line.split()[1]) * 1024  # reported in kB
    except (OSError, IndexError, ValueError):
        return None
    return None if resident is None else (name, resident)


@dataclass
class PeakMemory:
    """The largest sum of resident memory over a process tree's samples, and what made it up.

    Pages that forked Python workers share count in each of them, as RSS always does: the sum
    is an upper bound of what the tree takes from the machine.
    """

    total_bytes: int = 0
    processes: dict[str, list[int]] = field(default_factory=dict)  # at the peak: name -> resident bytes of each
    samples: int = 0

    def sample(self, root: int) -> None:
        memory = [sample for pid in process_tree(root) if (sample := resident_memory(pid))]
        self.samples += 1
        total = sum(resident for _, resident in memory)
        if total > self.total_bytes:
            self.total_bytes, self.processes = total, {}
            for name, resident in memory:
                self.processes.setdefault(name, []).append(resident)

    @property
    def megabytes(self) -> float:
        return self.total_bytes / 1e6


def wait_sampling(process: subprocess.Popen, peak: PeakMemory) -> int:
    while True:
        peak.sample(process.pid)
        try:
            return process.wait(timeout=MEMORY_SAMPLE_SECONDS)
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------- the machine


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str] | None  # None where /proc/cpuinfo cannot be read

    def has(self, flag: str) -> bool:
        # AMX comes as several flags (amx_tile, amx_bf16, amx_int8...): any of them counts.
        return any(name == flag or name.startswith(f"{flag}_") for name in self.flags or ())

    def describe(self) -> str:
        if self.flags is None:
            return f"{self.model} (CPU flags unknown)"
        present = ", ".join(f"{flag} {'yes' if self.has(flag) else 'no'}" for flag in CPU_FLAGS)
        return f"{self.model} ({present})"


def cpu_info() -> CpuInfo:
    """The first CPU of /proc/cpuinfo: its model name and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return CpuInfo(model=platform.processor() or "unknown CPU", flags=None)
    values = {}
    for line in lines:
        key, _, value = line.partition(":")
        values.setdefault(key.strip(), value.strip())
    return CpuInfo(model=values.get("model name", "unknown CPU"), flags=frozenset(values.get("flags", "").split()))


def versions() -> str:
    """Read from the installed distributions: this process never imports TensorFlow."""
    return ", ".join(f"{name} {installed_version(*distributions)}" for name, distributions in VERSIONED.items())


# ---------------------------------------------------------------- measurements


@dataclass(frozen=True)
class RawResult:
    """One engine's forward passes, in process, on the same images and batches."""

    engine: str
    images: int
    threads: int
    seconds: dict[str, float]  # forward pass (a FORWARD_PASSES key) -> seconds for all the images

    def rate(self, forward_pass: str) -> float:
        return self.images / self.seconds[forward_pass]

    @property
    def best_rate(self) -> float:
        return max(self.rate(forward_pass) for forward_pass in self.seconds)


@dataclass(frozen=True)
class JobTiming:
    images: int
    wall_seconds: float  # the whole spark-submit, JVM start included
    job_seconds: float  # the job's own metrics: from its Spark session to its summary
    converted_model: bool = False  # the onnx engine converted the network: its model cache was cold

    @property
    def rate(self) -> float:
        return self.images / self.job_seconds


@dataclass(frozen=True)
class MemoryResult:
    engine: str
    timing: JobTiming
    peak: PeakMemory


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of image counts") from None
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give image counts of at least 2 (PCA needs two rows)")
    return counts


def count_or_zero(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: give a number of images, or 0 to skip")
    return value


def image_folder(workdir: Path, count: int) -> Path:
    """The ``count`` generated images, written on first use and reused by later runs."""
    folder = workdir / "images" / str(count)
    if len(list(folder.rglob("*.jpg"))) != count:
        shutil.rmtree(folder, ignore_errors=True)
        generate_images(folder, count, seed=IMAGE_SEED)
    return folder


def run_logged(
    command: Sequence[str], log: Path, env: dict[str, str] | None = None, peak: PeakMemory | None = None
) -> float:
    """Run ``command`` with its output in ``log``, sampling its process tree's memory into ``peak``
    when given; wall seconds, or RuntimeError with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as output, subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env) as job:
        try:
            code = wait_sampling(job, peak) if peak else job.wait()
        except BaseException:
            job.kill()  # interrupted: leave no spark-submit behind
            raise
    wall = time.monotonic() - started
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(map(str, command[:3]))}... exited with {code} (log: {log}):\n{tail}")
    return wall


def measure_raw(folder: Path, engine: str, threads: int, log: Path) -> RawResult:
    result_file = log.with_suffix(".json")
    command = [sys.executable, __file__, "--raw-only", str(folder), "--raw-engine", engine]
    run_logged([*command, "--raw-threads", str(threads), "--raw-result", str(result_file)], log)
    result = json.loads(result_file.read_text())
    return RawResult(engine=engine, images=result["images"], threads=result["threads"], seconds=result["seconds"])


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
    converted = step is FEATURIZE and run.engine == ENGINE_ONNX and converted_model(log)
    return JobTiming(images=images, wall_seconds=wall, job_seconds=metrics.seconds, converted_model=converted)


def run_steps(steps: Sequence[SparkStep], run: PipelineRun, logs: Path) -> dict[str, JobTiming]:
    shutil.rmtree(run.uri, ignore_errors=True)
    return {step.name: run_step(step, run, logs) for step in steps}


def warm_up(run: PipelineRun, logs: Path) -> None:
    """An untimed featurize, so the timed runs find the engine's model cache filled (onnx) and the
    OS's file cache holding the libraries (both)."""
    run_steps([FEATURIZE], run, logs)
    if run.engine == ENGINE_ONNX and not any(Path(run.model_cache_uri).glob("*.onnx")):
        raise RuntimeError(f"no converted model under {run.model_cache_uri} after the warm-up run (logs: {logs})")


def measure_memory(run: PipelineRun, logs: Path) -> MemoryResult:
    shutil.rmtree(run.uri, ignore_errors=True)
    peak = PeakMemory()
    return MemoryResult(engine=run.engine, timing=run_step(FEATURIZE, run, logs, peak), peak=peak)


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


@dataclass(frozen=True)
class NightlyRun:
    label: str
    wall_seconds: float  # the whole local DAG run (airflow dags test), Airflow's start included
    status: str  # report.json's
    featurize_seconds: float | None  # None: no Spark job ran
    through_network: int | None


def run_nightly(label: str, day: int, images: Path, results: Path, airflow_home: Path, logs: Path) -> NightlyRun:
    """One run of the local DAG, as `make demo` runs it, on the night of November ``day``."""
    conf = {"images_uri": str(images), "results_uri": str(results), "weights": WEIGHTS_RANDOM}
    log = logs / f"nightly-{day}.log"
    started = time.monotonic()
    code = run_dag(airflow_environment(airflow_home), f"2026-11-{day:02d}T02:00:00+00:00", conf, log)
    wall = time.monotonic() - started
    report = json.loads((results / f"202611{day:02d}T020000Z" / "report.json").read_text())
    if code or report["status"] not in ("succeeded", "unchanged"):
        raise RuntimeError(f"the {label} DAG run ended {report['status']} (log: {log})")
    counts = report.get("counts", {})
    return NightlyRun(label, wall, report["status"], report.get("seconds", {}).get("featurize"),
                      counts.get("through_network"))  # fmt: skip


def measure_nightly(workdir: Path, count: int, model_cache: Path, logs: Path) -> list[NightlyRun]:
    """A full run of the local DAG on ``count`` images, the next night with 1 % of them replaced by
    other images, and a night without change; the model cache is warm for all three."""
    base = workdir / "nightly"
    shutil.rmtree(base, ignore_errors=True)
    images, results = base / "images", base / "results"
    shutil.copytree(image_folder(workdir, count), images)
    shutil.copytree(model_cache, results / "_models")
    runs = [run_nightly("full", 20, images, results, base / "airflow", logs)]
    existing = sorted(images.rglob("*.jpg"))
    others = generate_images(base / "others", max(1, count // 100), seed=IMAGE_SEED + 1)
    for target, source in zip(existing[:: len(existing) // len(others)], others, strict=False):
        target.write_bytes(source.read_bytes())
    runs.append(run_nightly(f"{len(others)} images changed (1 %)", 21, images, results, base / "airflow", logs))
    runs.append(run_nightly("nothing changed", 22, images, results, base / "airflow", logs))
    return runs


# ---------------------------------------------------------------- arithmetic


def marginal_rate(smaller: JobTiming, larger: JobTiming) -> float | None:
    """Images per second the job adds per extra image, JVM and session start-up cancelled out."""
    extra_seconds = larger.job_seconds - smaller.job_seconds
    return (larger.images - smaller.images) / extra_seconds if extra_seconds > 0 else None


def start_up(seconds: float, images: int, rate: float | None) -> float | None:
    """What a run costs besides its images: its seconds less its images at the marginal rate."""
    return None if rate is None else seconds - images / rate


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


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


def verdict(measured: float | None, target: float, *, at_most: bool = False) -> str:
    if measured is None:
        return "not measured"
    return "met" if (measured <= target if at_most else measured >= target) else "**not met**"


def engine_label(engine: str) -> str:
    default = ", default" if engine == DEFAULT_ENGINE else ""
    return f"{ENGINE_NAMES[engine]} (`{engine}`{default})"


@dataclass(frozen=True)
class Report:
    raw: dict[str, RawResult]  # engine -> its raw forward passes
    featurize: dict[str, dict[int, JobTiming]]  # engine -> image count -> featurize timing
    pipelines: dict[int, dict[str, JobTiming]]  # image count -> step name -> timing, default engine
    headline: int  # the image count PCA/CSV and the reference comparison are shown at
    marginal: tuple[int, int]
    warm_up_images: int
    model_cache: str
    memory: MemoryResult | None
    nightly: list[NightlyRun]
    reference: JobTiming | None
    reference_metrics: dict | None

    @property
    def raw_onnx_rate(self) -> float:
        return self.raw[ENGINE_ONNX].best_rate

    @property
    def raw_tensorflow_rate(self) -> float:
        return self.raw[ENGINE_TENSORFLOW].best_rate

    def marginal_rate(self, engine: str) -> float | None:
        small, large = self.marginal
        return marginal_rate(self.featurize[engine][small], self.featurize[engine][large])

    def start_up(self, engine: str) -> tuple[float | None, float | None]:
        """Warm start-up in job seconds and in spark-submit wall seconds (JVM start included)."""
        small = self.featurize[engine][self.marginal[0]]
        rate = self.marginal_rate(engine)
        return start_up(small.job_seconds, small.images, rate), start_up(small.wall_seconds, small.images, rate)

    @property
    def speed_up(self) -> float | None:
        if self.reference is None:
            return None
        return self.reference.wall_seconds / three_job_wall(self.pipelines[self.headline])


def raw_section(report: Report) -> list[str]:
    rows = [
        [FORWARD_PASSES[forward_pass], number(seconds, 2), number(result.rate(forward_pass))]
        for result in report.raw.values()
        for forward_pass, seconds in result.seconds.items()
    ]
    tensorflow, onnx = report.raw[ENGINE_TENSORFLOW], report.raw[ENGINE_ONNX]
    rows += [
        ["**best raw TensorFlow**", "", f"**{number(report.raw_tensorflow_rate)}**"],
        ["**raw ONNX Runtime**", "", f"**{number(report.raw_onnx_rate)}**"],
        ["raw ONNX Runtime / best raw TensorFlow", "", times(report.raw_onnx_rate / report.raw_tensorflow_rate)],
    ]
    return [
        f"## Raw in-process engines: {tensorflow.images:,} images, decode + preprocess + forward",
        "",
        f"Same images and batches of {BATCH_SIZE}; file bytes read beforehand; every forward pass warmed up "
        "(no tracing timed); each engine in its own subprocess. "
        f"TensorFlow: {tensorflow.threads} intra-op threads and 1 inter-op (`configure_tensorflow_threads`, "
        f"as the job's workers). ONNX Runtime: `intra_op_num_threads` {onnx.threads}, inter-op 1; the network "
        f"was converted (tf2onnx, opset {OPSET}) before the clock started.",
        "",
        *table(["forward pass", "seconds", "images/s"], rows),
    ]


def featurize_section(report: Report) -> list[str]:
    rows = []
    for engine, timings in report.featurize.items():
        for count, timing in sorted(timings.items()):
            model = "converted (cold cache)" if timing.converted_model else "cached" if engine == ENGINE_ONNX else "—"
            rates = [number(timing.wall_seconds), number(timing.job_seconds), number(timing.rate)]
            rows.append([f"{count:,}", f"`{engine}`", *rates, model])
    small, large = report.marginal
    engines = []
    for engine in report.featurize:
        rate = report.marginal_rate(engine)
        job_start_up, wall_start_up = report.start_up(engine)
        engines.append(
            [
                engine_label(engine),
                number(rate),
                times(ratio(rate, report.raw_onnx_rate)),
                times(ratio(rate, report.raw_tensorflow_rate)),
                number(job_start_up),
                number(wall_start_up),
            ]
        )
    engine_header = [
        "engine",
        f"marginal rate {small:,} → {large:,} images/s (job s)",
        "/ raw ONNX Runtime",
        "/ best raw TensorFlow",
        "warm start-up, job s",
        "warm start-up, wall s",
    ]
    return [
        "## Featurize job (spark-submit as the local DAG runs it)",
        "",
        "Job seconds come from the job's metrics JSON: from its Spark session to its summary, JVM start excluded; "
        f"wall seconds are the whole spark-submit. An untimed run of each engine on {report.warm_up_images:,} "
        f"images came first, so the ONNX model cache (`{report.model_cache}`) was warm.",
        "",
        *table(["images", "engine", "spark-submit wall s", "job s", "images/s (job s)", "ONNX model"], rows),
        "",
        *table(engine_header, engines),
        "",
        f"Warm start-up: the {small:,}-image run's seconds less {small:,} images at the engine's marginal rate, "
        "in job seconds and in spark-submit wall seconds (JVM start included: what the target is judged on).",
    ]


def memory_section(report: Report) -> list[str]:
    title = "## Peak memory of the featurize job"
    memory = report.memory
    if memory is None:
        return [title, "", "Skipped (--memory-images 0)."]
    timing, peak = memory.timing, memory.peak
    rows = [
        [
            f"{timing.images:,}",
            engine_label(memory.engine),
            f"**{number(peak.megabytes, 0)}**",
            str(sum(len(sizes) for sizes in peak.processes.values())),
            number(timing.wall_seconds),
            number(timing.job_seconds),
            number(timing.rate),
        ]
    ]
    parts = [
        [name, str(len(sizes)), number(sum(sizes) / 1e6, 0), number(max(sizes) / 1e6, 0)]
        for name, sizes in sorted(peak.processes.items(), key=lambda item: -sum(item[1]))
    ]
    return [
        title,
        "",
        f"Resident memory (VmRSS) summed over spark-submit's whole process tree (the JVM, the Python driver, the "
        f"PySpark daemon and its workers), sampled every {MEMORY_SAMPLE_SECONDS:g} s from /proc "
        f"({peak.samples:,} samples); pages forked workers share count in each, so the sum is an upper bound. "
        "MB are 10⁶ bytes.",
        "",
        *table(["images", "engine", "peak MB", "processes", "wall s", "job s", "images/s (job s)"], rows),
        "",
        "At the peak:",
        "",
        *table(["process", "count", "MB", "largest MB"], parts),
    ]


def nightly_section(report: Report) -> list[str]:
    title = "## Nightly runs (the local DAG, `airflow dags test`, as `make demo` runs it)"
    if not report.nightly:
        return [title, "", "Skipped (--nightly-images 0)."]
    full = report.nightly[0]
    rows = [
        [
            run.label,
            run.status,
            "no Spark job" if run.through_network is None else f"{run.through_network:,}",
            "–" if run.featurize_seconds is None else number(run.featurize_seconds),
            times(ratio(run.featurize_seconds, full.featurize_seconds)) if run.featurize_seconds else "–",
            number(run.wall_seconds),
            times(ratio(run.wall_seconds, full.wall_seconds)),
        ]
        for run in report.nightly
    ]
    header = ["run", "status", "through the network", "featurize job s", "/ full", "DAG run wall s", "/ full"]
    return [
        title,
        "",
        "Three nights on the same folder: every image, then with 1 % of the images replaced by other ones "
        "(the featurize job carries the others' rows over), then with nothing changed (no Spark job).",
        "",
        *table(header, rows),
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
    return [
        f"## Three-job pipeline (sum of spark-submit wall times; featurize with `{DEFAULT_ENGINE}`)",
        "",
        *table(header, rows),
    ]


def reference_section(report: Report) -> list[str]:
    count = report.headline
    ours = three_job_wall(report.pipelines[count])
    ours_job = sum(timing.job_seconds for timing in report.pipelines[count].values())
    header = ["pipeline", "wall s", "job s", "images/s (wall)"]
    rows = [
        [
            f"fruitflow: featurize (`{DEFAULT_ENGINE}`) + pca + export_csv (3 spark-submits)",
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
            "reference: course notebook approach, TensorFlow (1 spark-submit)",
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
    share = ratio(report.marginal_rate(DEFAULT_ENGINE), report.raw_onnx_rate)
    _, wall_start_up = report.start_up(DEFAULT_ENGINE)
    peak = report.memory.peak.megabytes if report.memory else None
    memory_images = f"{report.memory.timing.images:,}" if report.memory else "n"
    rows = [
        [
            f"featurize (`{DEFAULT_ENGINE}`) marginal rate ≥ {MARGINAL_TARGET} × raw ONNX Runtime",
            times(share),
            verdict(share, MARGINAL_TARGET),
        ],
        [
            f"featurize (`{DEFAULT_ENGINE}`) warm start-up, spark-submit wall, ≤ {START_UP_TARGET:g} s",
            f"{number(wall_start_up)} s",
            verdict(wall_start_up, START_UP_TARGET, at_most=True),
        ],
        [
            f"featurize (`{DEFAULT_ENGINE}`) peak memory on {memory_images} images ≤ {MEMORY_TARGET_MB:,.0f} MB",
            f"{number(peak, 0)} MB",
            verdict(peak, MEMORY_TARGET_MB, at_most=True),
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
        raw_section(report),
        featurize_section(report),
        memory_section(report),
        nightly_section(report),
        pca_csv_section(report),
        growth_section(report),
        reference_section(report),
        targets_section(report),
    ]
    lines = ["# fruitflow benchmark", "", header, "", f"CPU: {cpu_info().describe()}", "", f"Versions: {versions()}"]
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
        help="image counts for the three-job pipeline, default engine (default 250,500,1000,2000)",
    )
    parser.add_argument(
        "--marginal",
        type=parse_counts,
        # A window of 2,000 images is 15-20 s of featurising: the shared machine's noise swung its
        # rate from 0.68x to 1.16x raw ONNX Runtime between two runs. 9,000 images is a minute.
        default=(1000, 10000),
        help="two image counts for each engine's featurize marginal rate and warm start-up (default 1000,10000)",
    )
    parser.add_argument(
        "--raw-images", type=positive_int, default=1000, help="images for the raw engines (default %(default)s)"
    )
    parser.add_argument(
        "--raw-threads",
        type=positive_int,
        default=2,
        help="threads of each raw engine: the cores Spark's local[*] shares among its tasks (default %(default)s)",
    )
    parser.add_argument(
        "--memory-images",
        type=count_or_zero,
        default=10000,
        help="images for the featurize job's peak memory, default engine; 0 skips it (default %(default)s)",
    )
    parser.add_argument(
        "--nightly-images",
        type=count_or_zero,
        default=2000,
        help="images for the nightly rows: the local DAG in full, then with 1%% of the images changed, "
        "then unchanged; 0 skips them (default %(default)s)",
    )
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
        help="generated images (kept between runs), code, results, model cache and logs (default build/bench)",
    )
    # The raw engines' subprocess: python bench/benchmark.py --raw-only FOLDER --raw-engine E --raw-result FILE
    parser.add_argument("--raw-only", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--raw-engine", choices=ENGINES, default=ENGINE_TENSORFLOW, help=argparse.SUPPRESS)
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
    memory_counts = [args.memory_images] if args.memory_images else []
    counts = sorted({*full_counts, *featurize_only, args.raw_images, *memory_counts})

    progress(f"generating images ({', '.join(map(str, counts))}) under {workdir / 'images'}")
    folders = {count: image_folder(workdir, count) for count in counts}
    version = upload_code(results)

    raw = {}
    for engine in (ENGINE_TENSORFLOW, ENGINE_ONNX):
        progress(f"raw {ENGINE_NAMES[engine]} on {args.raw_images} images, {args.raw_threads} threads (subprocess)")
        log = logs / f"raw-{engine}-{args.raw_images}.log"
        raw[engine] = measure_raw(folders[args.raw_images], engine, args.raw_threads, log)

    def run_for(count: int, engine: str = DEFAULT_ENGINE, purpose: str = "") -> PipelineRun:
        return pipeline_run(folders[count], results, version, f"{purpose}{engine}-{count}", engine)

    warm_up_images = counts[0]
    for engine in ENGINES:
        progress(f"warm-up: featurize with {engine} on {warm_up_images} images (untimed)")
        warm_up(run_for(warm_up_images, engine, "warm-up-"), logs)

    pipelines = {}
    for count in [*full_counts, *featurize_only]:
        steps = PIPELINE if count in full_counts else (FEATURIZE,)
        progress(f"{' + '.join(step.name for step in steps)} ({DEFAULT_ENGINE}) on {count} images")
        pipelines[count] = run_steps(steps, run_for(count), logs)
    featurize = {DEFAULT_ENGINE: {count: steps[FEATURIZE.name] for count, steps in pipelines.items()}}
    for engine in ENGINES:
        if engine != DEFAULT_ENGINE:
            featurize[engine] = {}
            for count in args.marginal:
                progress(f"featurize ({engine}) on {count} images")
                featurize[engine][count] = run_steps([FEATURIZE], run_for(count, engine), logs)[FEATURIZE.name]

    memory = None
    if args.memory_images:
        progress(f"featurize ({DEFAULT_ENGINE}) on {args.memory_images} images, sampling its memory")
        memory = measure_memory(run_for(args.memory_images, purpose="memory-"), logs)

    nightly = []
    if args.nightly_images:
        progress(f"nightly runs of the local DAG on {args.nightly_images} images: full, 1 % changed, unchanged")
        nightly = measure_nightly(workdir, args.nightly_images, Path(run_for(warm_up_images).model_cache_uri), logs)

    reference = reference_metrics = None
    if not args.skip_reference:
        progress(f"reference pipeline on {headline} images")
        reference, reference_metrics = run_reference(run_for(headline), results / f"reference-{headline}", logs)
    return Report(
        raw=raw,
        featurize=featurize,
        pipelines=pipelines,
        headline=headline,
        marginal=tuple(args.marginal),
        warm_up_images=warm_up_images,
        model_cache=run_for(warm_up_images).model_cache_uri,
        memory=memory,
        nightly=nightly,
        reference=reference,
        reference_metrics=reference_metrics,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_only:
        result = raw_throughput(args.raw_only, args.raw_engine, args.raw_threads)
        args.raw_result.write_text(json.dumps(result))
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
