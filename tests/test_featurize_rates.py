"""The per-vCPU featurize rates that EMR cluster sizing plans with are the benchmark's: the constant in
sizing.py equals the table bench/results.md prints, engine by engine."""

from __future__ import annotations

import re
from pathlib import Path

from fruitflow.contract import ENGINES
from fruitflow_pipeline.sizing import FEATURIZE_IMAGES_PER_VCPU_SECOND

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results.md"
TITLE = "## Per-vCPU featurize rates (what EMR cluster sizing plans with)"


def results_rates() -> dict[str, str]:
    """Engine -> its images/s per vCPU cell, from the section's table."""
    _, found, rest = RESULTS.read_text().partition(f"\n{TITLE}\n")
    assert found, f"bench/results.md has no section {TITLE!r}"
    section = rest.split("\n## ")[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {engine.group(1): cells[-1] for cells in rows if (engine := re.search(r"`(.+?)`", cells[0]))}


def test_sizing_plans_with_the_per_vcpu_rates_bench_results_print():
    assert {engine: float(cell) for engine, cell in results_rates().items()} == FEATURIZE_IMAGES_PER_VCPU_SECOND


def test_every_engine_has_a_per_vcpu_rate():
    assert set(FEATURIZE_IMAGES_PER_VCPU_SECOND) == set(ENGINES)
    assert all(rate > 0 for rate in FEATURIZE_IMAGES_PER_VCPU_SECOND.values())
