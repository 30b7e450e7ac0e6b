"""What the local DAG's nights cost, as `make demo` runs them: every image, then 1 % of them
changed, then nothing changed."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fruitflow.contract import WEIGHTS_RANDOM
from fruitflow.sample_images import generate_images
from fruitflow_bench.workload import IMAGE_SEED, image_folder
from scripts.demo import airflow_environment, deployment_defaults, run_dag


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
    # A deployment whose runs may read and write these folders, as `make demo` sets it up.
    environment = airflow_environment(airflow_home) | deployment_defaults(str(images), str(results), WEIGHTS_RANDOM)
    code = run_dag(environment, f"2026-11-{day:02d}T02:00:00+00:00", conf, log)
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
