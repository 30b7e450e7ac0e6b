"""Fruits-360 scale on one machine: the three jobs through spark-submit with the DAG's settings on
every image, then on a night where 1 % of them changed (half new files, half rewritten), each job's
wall and its process tree's peak memory; the same at 10,000 images, the size whose peaks the large
bucket's are compared with (memory that does not grow with the bucket)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from fruitflow.contract import FeaturizeMetrics
from fruitflow.sample_images import generate_images
from fruitflow_bench.jobs import FEATURIZE, JobTiming, pipeline_run, run_step
from fruitflow_bench.memory import PeakMemory
from fruitflow_bench.workload import IMAGE_SEED, image_folder
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.steps import PIPELINE


@dataclass(frozen=True)
class ScaleJob:
    timing: JobTiming
    peak: PeakMemory

    @property
    def peak_megabytes(self) -> float:
        return self.peak.megabytes

    def largest_parts(self) -> str:
        """``java 1,830 + python3.11 610 + 605``: the processes of 50 MB or more at the peak, largest first."""
        parts = sorted(self.peak.processes.items(), key=lambda item: -sum(item[1]))
        return " + ".join(
            f"{name} {' + '.join(f'{size / 1e6:,.0f}' for size in sorted(sizes, reverse=True) if size >= 50e6)}"
            for name, sizes in parts
            if max(sizes) >= 50e6
        )


BASELINE_IMAGES = 10_000


@dataclass(frozen=True)
class ScaleNight:
    label: str
    images: int
    through_network: int
    jobs: dict[str, ScaleJob]  # step name -> its run


def peak_megabytes(nights: list[ScaleNight], step_name: str) -> float:
    """The step's highest peak over ``nights``."""
    return max(night.jobs[step_name].peak_megabytes for night in nights)


def run_night(label: str, run: PipelineRun, logs: Path) -> ScaleNight:
    shutil.rmtree(run.uri, ignore_errors=True)
    jobs = {}
    for step in PIPELINE:
        peak = PeakMemory()
        jobs[step.name] = ScaleJob(run_step(step, run, logs, peak), peak)
    metrics = FeaturizeMetrics.from_json(Path(run.metrics_uri(FEATURIZE.name)).read_text())
    return ScaleNight(label, metrics.images, metrics.model_rows, jobs)


def change_one_percent(images: Path, others_folder: Path) -> int:
    """Add new files for 0.5 % of the images and rewrite another 0.5 % with other content; returns
    how many files changed."""
    existing = sorted(images.rglob("*.jpg"))
    others = generate_images(others_folder, max(2, len(existing) // 100), seed=IMAGE_SEED + 2)
    half = len(others) // 2
    for index, source in enumerate(others[:half]):
        shutil.copy(source, images / source.parent.parent.name / source.parent.name / f"new_{index}.jpg")
    for target, source in zip(existing[:: len(existing) // (len(others) - half)], others[half:], strict=False):
        target.write_bytes(source.read_bytes())
    return len(others)


def measure_scale(workdir: Path, count: int, results: Path, version: str, logs: Path) -> list[ScaleNight]:
    """Night 1 on ``count`` images, then night 2 with 1 % of them changed, carrying the rest over."""
    base = workdir / "scale" / str(count)
    shutil.rmtree(base, ignore_errors=True)
    images = base / "images"
    shutil.copytree(image_folder(workdir, count), images)
    first = pipeline_run(images, results, version, f"scale-{count}-night-1")
    nights = [run_night(f"night 1: all {count:,} images", first, logs)]
    changed = change_one_percent(images, base / "others")
    second = replace(pipeline_run(images, results, version, f"scale-{count}-night-2"), previous_key=first.key)
    nights.append(run_night(f"night 2: {changed:,} changed (1 %)", second, logs))
    return nights
