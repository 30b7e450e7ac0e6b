"""What results.md says: the figures derived from the measurements, the targets they are judged
against, and the Markdown, one function per section."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from fruitflow.contract import (
    DEFAULT_ENGINE,
    ENGINE_ONNX,
    ENGINE_OPENVINO,
    ENGINE_OPENVINO_BF16,
    ENGINE_TENSORFLOW,
    ONNX_MODEL_ENGINES,
)
from fruitflow.onnx_model import OPSET
from fruitflow_bench import ROOT
from fruitflow_bench.accuracy import PrecisionCost
from fruitflow_bench.jobs import FEATURIZE, JobTiming, MemoryResult, marginal_rate, start_up, three_job_wall
from fruitflow_bench.machine import cpu_info, versions
from fruitflow_bench.memory import MEMORY_SAMPLE_SECONDS
from fruitflow_bench.nightly import NightlyRun
from fruitflow_bench.raw_engines import ENGINE_NAMES, FORWARD_PASSES, RawResult
from fruitflow_bench.scale import ScaleNight, peak_megabytes
from fruitflow_bench.wheelhouse import PackageSet, wheelhouse_lines
from fruitflow_bench.workload import BATCH_SIZE, IMAGE_SEED
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.steps import PIPELINE

MARGINAL_TARGET = 0.8  # featurize marginal rate (default engine) / raw ONNX Runtime rate
FASTER_ENGINE_TARGET = 1.2  # the faster f32 engine's featurize marginal rate / the onnx engine's, same run
F32_ENGINES = (ENGINE_ONNX, ENGINE_OPENVINO)  # the default is chosen among them; bf16 is only ever an opt-in
START_UP_TARGET = 20.0  # seconds: the small run's spark-submit wall less its images at the marginal rate
MEMORY_TARGET_MB = 2500.0  # peak resident memory of the featurize job's process tree (2.5 GB)
SPEED_UP_TARGET = 6.0  # reference wall time / three-job wall time
SCALE_NIGHT_SHARE_TARGET = 0.10  # the 1 %-changed night's featurize wall / the full night's
SCALE_GROWTH_TARGET = 1.10  # a job's peak on the large bucket / its peak on the baseline bucket
# Above this share of the job's time, decoding would be worth overlapping with inference in the UDF.
DECODE_SHARE_LIMIT = 0.20
# The raw forward pass (raw engine, forward pass) that each job engine runs on its workers.
JOB_FORWARD_PASSES = {
    ENGINE_ONNX: (ENGINE_ONNX, "onnxruntime"),
    ENGINE_OPENVINO: (ENGINE_OPENVINO, "openvino"),
    ENGINE_OPENVINO_BF16: (ENGINE_OPENVINO, "openvino_bf16"),
    ENGINE_TENSORFLOW: (ENGINE_TENSORFLOW, "compiled"),
}


@dataclass(frozen=True)
class Report:
    raw: dict[str, RawResult]  # engine -> its raw forward passes
    bf16: PrecisionCost  # OpenVINO's bf16 features of the raw images against its f32 ones
    featurize: dict[str, dict[int, JobTiming]]  # engine -> image count -> featurize timing
    pipelines: dict[int, dict[str, JobTiming]]  # image count -> step name -> timing, default engine
    headline: int  # the image count PCA/CSV and the reference comparison are shown at
    marginal: tuple[int, int]
    warm_up_images: int
    workdir: Path
    model_cache: Path
    memory: MemoryResult | None
    nightly: list[NightlyRun]
    scale: dict[int, list[ScaleNight]]  # image count -> night 1 and the 1 %-changed night 2; empty: skipped
    reference: JobTiming | None
    reference_metrics: dict | None
    wheelhouse: list[PackageSet]  # the EMR nodes' package sets; empty: skipped

    @property
    def raw_onnx_rate(self) -> float:
        return self.raw[ENGINE_ONNX].best_rate

    @property
    def raw_tensorflow_rate(self) -> float:
        return self.raw[ENGINE_TENSORFLOW].best_rate

    @property
    def raw_openvino_rate(self) -> float:
        """OpenVINO in f32, as the `openvino` engine runs it."""
        return self.raw[ENGINE_OPENVINO].rate("openvino")

    @property
    def raw_openvino_bf16_rate(self) -> float:
        return self.raw[ENGINE_OPENVINO].rate("openvino_bf16")

    def marginal_rate(self, engine: str) -> float | None:
        small, large = self.marginal
        return marginal_rate(self.featurize[engine][small], self.featurize[engine][large])

    def start_up(self, engine: str) -> tuple[float | None, float | None]:
        """Warm start-up in job seconds and in spark-submit wall seconds (JVM start included)."""
        small = self.featurize[engine][self.marginal[0]]
        rate = self.marginal_rate(engine)
        return start_up(small.job_seconds, small.images, rate), start_up(small.wall_seconds, small.images, rate)

    def decode_share(self, engine: str) -> float | None:
        """Decoding and resizing's share of the job's time: the raw rows' decode + resize ms per image
        against the cores' time the job spends per image at its marginal rate (local[*]: every CPU).
        Every core runs a task, so this is the share an overlap with inference could hide at best."""
        rate = self.marginal_rate(engine)
        raw_engine, forward_pass = JOB_FORWARD_PASSES[engine]
        if rate is None:
            return None
        return self.raw[raw_engine].decode_ms(forward_pass) * rate / (1000 * (os.cpu_count() or 1))

    @property
    def speed_up(self) -> float | None:
        if self.reference is None:
            return None
        return self.reference.wall_seconds / three_job_wall(self.pipelines[self.headline])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f} %"


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


def shown_path(path: Path, workdir: Path) -> str:
    """``path`` relative to the repository, or to the benchmark's --workdir where that lies outside
    it: results.md is committed, and the machine that ran it has other absolute paths than the reader's."""
    if path.is_relative_to(ROOT):
        return path.relative_to(ROOT).as_posix()
    return f"<workdir>/{path.relative_to(workdir).as_posix()}"


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
        ["**raw OpenVINO (f32)**", "", f"**{number(report.raw_openvino_rate)}**"],
        ["raw ONNX Runtime / best raw TensorFlow", "", times(report.raw_onnx_rate / report.raw_tensorflow_rate)],
        ["raw OpenVINO / raw ONNX Runtime", "", times(report.raw_openvino_rate / report.raw_onnx_rate)],
        ["raw OpenVINO bf16 / raw OpenVINO f32", "", times(report.raw_openvino_bf16_rate / report.raw_openvino_rate)],
    ]
    shares = [
        [
            FORWARD_PASSES[forward_pass],
            number(result.decode_ms(forward_pass), 2),
            number(result.inference_ms(forward_pass), 2),
            f"{number(100 * result.decode_seconds[forward_pass] / result.seconds[forward_pass], 0)} %",
        ]
        for result in report.raw.values()
        for forward_pass in result.seconds
    ]
    return [
        f"## Raw in-process engines: {tensorflow.images:,} images, decode + preprocess + forward",
        "",
        f"Same images and batches of {BATCH_SIZE}; file bytes read beforehand; every forward pass warmed up "
        "(no tracing timed); each engine in its own subprocess. "
        f"TensorFlow: {tensorflow.threads} intra-op threads and 1 inter-op (`configure_tensorflow_threads`, "
        f"as the job's workers). ONNX Runtime: `intra_op_num_threads` {onnx.threads}, inter-op 1; OpenVINO: "
        f"`INFERENCE_NUM_THREADS` {onnx.threads}, one stream, `INFERENCE_PRECISION_HINT` f32, as the job's workers; "
        f"the network was converted (tf2onnx, opset {OPSET}) before the clock started.",
        "",
        *table(["forward pass", "seconds", "images/s"], rows),
        "",
        "Where each image's time goes: decode + resize (Pillow, and stacking the batch) against the engine's "
        "preprocess + forward pass, per image, in the same runs.",
        "",
        *table(["forward pass", "decode + resize ms/image", "inference ms/image", "decode share"], shares),
    ]


def bf16_section(report: Report) -> list[str]:
    cost = report.bf16
    title = f"## What bf16 costs: OpenVINO's bf16 features against its f32 ones, {cost.images:,} raw images"
    if cost.max_difference == 0:
        return [title, "", "This CPU has no bf16 (OpenVINO ran the bf16 pass in f32): identical features."]
    rows = [
        ["max difference, share of the largest f32 feature", f"{100 * cost.max_difference:.2f} %"],
        ["mean difference, share of the largest f32 feature", f"{100 * cost.mean_difference:.3f} %"],
        ["cosine similarity per image, lowest / mean", f"{cost.min_cosine:.5f} / {cost.mean_cosine:.5f}"],
        ["PCA's k at 95 % of the variance, f32 / bf16", f"{cost.k_f32} / {cost.k_bf16}"],
        [
            "images whose nearest neighbour has the same class with bf16 as with f32",
            f"{cost.same_neighbour_class:,} of {cost.images:,}",
        ],
        ["raw OpenVINO bf16 / f32", times(report.raw_openvino_bf16_rate / report.raw_openvino_rate)],
    ]
    return [
        title,
        "",
        "The `openvino-bf16` engine, an opt-in: the same images, batches and threads as the raw rows; the "
        "nearest neighbour by Euclidean distance among the images, its class the generated fruit.",
        "",
        *table(["", "measured"], rows),
    ]


def featurize_section(report: Report) -> list[str]:
    rows = []
    for engine, timings in report.featurize.items():
        for count, timing in sorted(timings.items()):
            cached = "cached" if engine in ONNX_MODEL_ENGINES else "—"
            model = "converted (cold cache)" if timing.converted_model else cached
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
                times(ratio(rate, report.raw_openvino_rate)),
                times(ratio(rate, report.raw_tensorflow_rate)),
                times(ratio(rate, report.marginal_rate(ENGINE_ONNX))),
                number(job_start_up),
                number(wall_start_up),
                percent(report.decode_share(engine)),
            ]
        )
    engine_header = [
        "engine",
        f"marginal rate {small:,} → {large:,} images/s (job s)",
        "/ raw ONNX Runtime",
        "/ raw OpenVINO",
        "/ best raw TensorFlow",
        "/ `onnx` job",
        "warm start-up, job s",
        "warm start-up, wall s",
        "decode + resize share of the job's time",
    ]
    return [
        "## Featurize job (spark-submit as the local DAG runs it)",
        "",
        "Job seconds come from the job's metrics JSON: from its Spark session to its summary, JVM start excluded; "
        f"wall seconds are the whole spark-submit. An untimed run of each engine on {report.warm_up_images:,} "
        f"images came first, so the ONNX model cache (`{shown_path(report.model_cache, report.workdir)}`) was warm.",
        "",
        *table(["images", "engine", "spark-submit wall s", "job s", "images/s (job s)", "ONNX model"], rows),
        "",
        *table(engine_header, engines),
        "",
        f"Warm start-up: the {small:,}-image run's seconds less {small:,} images at the engine's marginal rate, "
        "in job seconds and in spark-submit wall seconds (JVM start included: what the target is judged on). "
        "Decode + resize share: the raw rows' decode + resize ms per image against the job's core time per image "
        f"({os.cpu_count()} cores, each running a task, over the marginal rate).",
    ]


def per_vcpu_rate(rate: float, cpus: int) -> Decimal:
    """Images per second one vCPU featurises: the marginal rate as printed over the run's CPUs, rounded half up
    to one decimal, so that a reader can redo the division from the table above."""
    return (Decimal(f"{rate:.1f}") / cpus).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def featurize_rates_section(rates: dict[str, float | None], marginal: tuple[int, int], cpus: int) -> list[str]:
    """``rates``: each engine's featurize marginal rate (None where the run has none), measured on ``cpus`` CPUs."""
    small, large = marginal
    rows = [
        [
            engine_label(engine),
            number(rate),
            str(cpus),
            "n/a (no marginal rate)" if rate is None else str(per_vcpu_rate(rate, cpus)),
        ]
        for engine, rate in rates.items()
    ]
    header = ["engine", f"marginal rate {small:,} → {large:,} images/s (job s)", "CPUs", "images/s per vCPU"]
    return [
        "## Per-vCPU featurize rates (what EMR cluster sizing plans with)",
        "",
        f"Each engine's featurize marginal rate above over the {cpus} CPUs it ran on (`local[*]`: a task on every "
        "CPU): the images one vCPU featurises per second, the figures "
        "`fruitflow_pipeline.sizing.FEATURIZE_IMAGES_PER_VCPU_SECOND` holds (a test keeps them equal).",
        "",
        *table(header, rows),
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


def scale_section(report: Report) -> list[str]:
    title = "## Scale: the three jobs with the DAG's settings, every image, then 1 % changed"
    if not report.scale:
        return [title, "", "Skipped (the default; `make bench BENCH_SCALE=90000` runs it)."]
    sections = []
    for count, (full, changed) in sorted(report.scale.items()):
        rows = []
        for step in PIPELINE:
            first, second = full.jobs[step.name], changed.jobs[step.name]
            rows.append([
                f"`{step.name}`",
                number(first.timing.wall_seconds),
                number(first.peak_megabytes, 0),
                number(second.timing.wall_seconds),
                times(ratio(second.timing.wall_seconds, first.timing.wall_seconds)),
                number(second.peak_megabytes, 0),
            ])  # fmt: skip
        header = ["job", "night 1 wall s", "night 1 peak MB", "night 2 wall s", "/ night 1", "night 2 peak MB"]
        parts = [
            [f"`{step.name}`", night.label, night.jobs[step.name].largest_parts()]
            for step in PIPELINE
            for night in (full, changed)
        ]
        sections += [
            f"### {count:,} images",
            "",
            f"Night 1: {full.images:,} images, {full.through_network:,} through the network. Night 2: "
            f"{changed.images:,} images, {changed.through_network:,} through the network, the others carried over.",
            "",
            *table(header, rows),
            "",
            "At each peak (MB per process):",
            "",
            *table(["job", "night", "processes"], parts),
            "",
        ]
    if growth := scale_growth(report):
        baseline, largest, peaks = growth
        rows = [
            [f"`{step.name}`", number(low, 0), number(high, 0), times(ratio(high, low))]
            for step, (low, high) in zip(PIPELINE, peaks, strict=True)
        ]
        sections += [
            f"Peaks over both nights, {baseline:,} against {largest:,} images:",
            "",
            *table(["job", f"peak MB, {baseline:,}", f"peak MB, {largest:,}", "growth"], rows),
        ]
    return [
        title,
        "",
        "Each job through spark-submit as the local DAG runs it (driver memory "
        f"{LocalSettings().driver_memory}); peak MB as above, over each job's whole process tree.",
        "",
        *sections,
    ]


def scale_growth(report: Report) -> tuple[int, int, list[tuple[float, float]]] | None:
    """The smallest and the largest scale bucket, and each step's peak on both, when there are two."""
    if len(report.scale) < 2:
        return None
    baseline, largest = min(report.scale), max(report.scale)
    peaks = [
        (peak_megabytes(report.scale[baseline], step.name), peak_megabytes(report.scale[largest], step.name))
        for step in PIPELINE
    ]
    return baseline, largest, peaks


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
    faster = max(F32_ENGINES, key=lambda engine: report.marginal_rate(engine) or 0.0)
    speed_up = ratio(report.marginal_rate(faster), report.marginal_rate(ENGINE_ONNX))
    shares = [found for engine in report.featurize if (found := report.decode_share(engine)) is not None]
    decode_share = max(shares, default=None)
    rows = [
        [
            f"featurize (`{DEFAULT_ENGINE}`) marginal rate ≥ {MARGINAL_TARGET} × raw ONNX Runtime",
            times(share),
            verdict(share, MARGINAL_TARGET),
        ],
        [
            f"featurize with the faster engine (`{faster}`) marginal rate ≥ {FASTER_ENGINE_TARGET} × the `onnx` job's",
            times(speed_up),
            verdict(speed_up, FASTER_ENGINE_TARGET),
        ],
        [
            f"featurize decode + resize share of the job's time ≤ {100 * DECODE_SHARE_LIMIT:.0f} % with every engine "
            "(above it, overlap it with inference)",
            percent(decode_share),
            verdict(decode_share, DECODE_SHARE_LIMIT, at_most=True),
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
    if report.scale:
        full, changed = report.scale[max(report.scale)]
        share = ratio(changed.jobs[FEATURIZE.name].timing.wall_seconds, full.jobs[FEATURIZE.name].timing.wall_seconds)
        rows.append([
            f"1 %-changed night's featurize wall ≤ {SCALE_NIGHT_SHARE_TARGET:.0%} of the full night's "
            f"({full.images:,} images)",
            f"{number(100 * share if share else None)} %",
            verdict(share, SCALE_NIGHT_SHARE_TARGET, at_most=True),
        ])  # fmt: skip
        for step in PIPELINE:
            peak = peak_megabytes([full, changed], step.name)
            rows.append([
                f"`{step.name}` peak memory on {full.images:,} images ≤ {MEMORY_TARGET_MB:,.0f} MB",
                f"{number(peak, 0)} MB",
                verdict(peak, MEMORY_TARGET_MB, at_most=True),
            ])  # fmt: skip
        if growth := scale_growth(report):
            baseline, largest, peaks = growth
            for step, (low, high) in zip(PIPELINE, peaks, strict=True):
                rows.append([
                    f"`{step.name}` peak on {largest:,} images ≤ {SCALE_GROWTH_TARGET:g}× its peak on {baseline:,}",
                    times(ratio(high, low)),
                    verdict(ratio(high, low), SCALE_GROWTH_TARGET, at_most=True),
                ])  # fmt: skip
    return ["## Targets", "", *table(["target", "measured", "status"], rows)]


def render(report: Report, started: datetime) -> str:
    header = (
        f"{started:%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}) · "
        f"measured in one run on the same generated images (seed {IMAGE_SEED}), random MobileNetV2 weights, "
        f"Spark `{LocalSettings().spark_master}`, driver memory {LocalSettings().driver_memory}"
    )
    sections = [
        raw_section(report),
        bf16_section(report),
        featurize_section(report),
        featurize_rates_section(
            {engine: report.marginal_rate(engine) for engine in report.featurize}, report.marginal, os.cpu_count() or 1
        ),
        memory_section(report),
        nightly_section(report),
        scale_section(report),
        pca_csv_section(report),
        growth_section(report),
        reference_section(report),
        wheelhouse_lines(report.wheelhouse),
        targets_section(report),
    ]
    lines = ["# fruitflow benchmark", "", header, "", f"CPU: {cpu_info().describe()}", "", f"Versions: {versions()}"]
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n"
