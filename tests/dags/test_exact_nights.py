"""A night is skipped only when nothing that shapes its outputs changed: the images, the params,
the weights' content and the jobs' code. Local target, six images, the tensorflow engine (a new
weights file then costs no ONNX conversion)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fruitflow.sample_images import generate_images

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
RUN_KEYS = {day: f"202612{day:02d}T020000Z" for day in range(1, 8)}


@dataclass(frozen=True)
class Night:
    state: str
    ran_featurize: bool
    report: dict
    featurize: dict | None  # the featurize job's metrics, when it ran


def save_weights(path: Path, seed: int) -> None:
    import keras

    from fruitflow.model import build_classifier

    keras.utils.set_random_seed(seed)
    build_classifier().save_weights(str(path))


@pytest.fixture(scope="module")
def nights(load_dag_for_module, airflow_db, spark_steps_in_process, tmp_path_factory) -> dict[int, Night]:
    tmp_path = tmp_path_factory.mktemp("exact")
    images, results, weights = tmp_path / "images", tmp_path / "results", tmp_path / "mobilenet.weights.h5"
    jobs, same_code_elsewhere = tmp_path / "jobs", tmp_path / "another-clone" / "spark_jobs"
    for copy in (jobs, same_code_elsewhere):
        shutil.copytree(ROOT / "spark_jobs", copy, ignore=shutil.ignore_patterns("__pycache__"))
    generate_images(images, 6, seed=5)
    save_weights(weights, seed=1)
    conf = {"images_uri": str(images), "results_uri": str(results), "weights": str(weights), "engine": "tensorflow"}
    dag = load_dag_for_module("local", jobs_dir=str(jobs))
    nights = {}

    def night(day: int) -> None:
        dag_run = dag.test(logical_date=datetime(2026, 12, day, 2, tzinfo=UTC), run_conf=conf)
        folder = results / RUN_KEYS[day]
        metrics = folder / "metrics" / "featurize.json"
        nights[day] = Night(
            state=dag_run.state,
            ran_featurize=metrics.exists(),
            report=json.loads((folder / "report.json").read_text()),
            featurize=json.loads(metrics.read_text()) if metrics.exists() else None,
        )

    night(1)
    night(2)  # untouched
    save_weights(weights, seed=2)  # retrained, written over the same file
    night(3)
    pca = jobs / "fruitflow" / "pca.py"
    pca.write_text(pca.read_text() + "\n# a fix in PCA\n")
    night(4)
    latest = results / "latest.json"
    older = {key: value for key, value in json.loads(latest.read_text()).items()
             if key not in ("weights_fingerprint", "code_version")}  # fmt: skip
    latest.write_text(json.dumps(older))
    night(5)
    shutil.copy(pca, same_code_elsewhere / "fruitflow" / "pca.py")
    dag = load_dag_for_module("local", jobs_dir=str(same_code_elsewhere))
    night(6)  # the same code, from another folder
    return nights


def test_an_untouched_night_and_the_same_code_elsewhere_skip(nights):
    assert all(night.state == "success" for night in nights.values())
    for day, since in [(2, 1), (6, 5)]:
        assert not nights[day].ran_featurize
        assert (nights[day].report["status"], nights[day].report["unchanged_since"]) == ("unchanged", RUN_KEYS[since])


def test_weights_rewritten_at_the_same_path_recompute_every_image(nights):
    report, metrics = nights[3].report, nights[3].featurize
    assert report["changes"] == [f"weights changed since {RUN_KEYS[1]}: {report['inputs']['weights']} was rewritten"]
    assert report["previous_run"] == RUN_KEYS[1]
    assert (metrics["reused"], metrics["model_rows"]) == (0, 6)  # other weights: no row carried over


def test_a_change_of_the_jobs_code_runs_the_night_and_reuses_features_whose_identity_holds(nights):
    report, metrics = nights[4].report, nights[4].featurize
    (change,) = report["changes"]
    assert change.startswith(f"jobs' code changed since {RUN_KEYS[3]} (version ")
    assert (metrics["reused"], metrics["model_rows"]) == (6, 0)  # PCA and the CSV recomputed, no image
    assert report["counts"]["csv_rows"] == 6 and report["status"] == "succeeded"


def test_a_latest_json_from_before_the_new_fields_counts_as_changed_not_as_an_error(nights):
    report, metrics = nights[5].report, nights[5].featurize
    assert report["changes"] == [
        f"weights not recorded by {RUN_KEYS[4]} (an older latest.json): taken as changed",
        f"jobs' code version not recorded by {RUN_KEYS[4]} (an older latest.json): taken as changed",
    ]
    assert (report["previous_run"], metrics["reused"], metrics["model_rows"]) == (RUN_KEYS[4], 6, 0)
