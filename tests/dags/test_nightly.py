"""Nightly runs on the local target: only what changed goes through the network, nothing runs when
nothing changed, a failed run never moves latest.json, and each good run emits an asset event."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fruitflow.sample_images import generate_images

pytestmark = pytest.mark.spark

STEPS = ["empty_run_folder", "upload_code", "featurize", "pca", "export_csv", "check_outputs", "remove_old_runs"]
# 200 images: 20 of each class, so the 5 replaced, the 10 deleted and the 185 reused images all
# exist, and every path through the network, carried over or removed is counted exactly.
IMAGES = 200


def run_key(day: int) -> str:
    return f"202611{day:02d}T020000Z"


def night(dag, day: int, conf: dict):
    return dag.test(logical_date=datetime(2026, 11, day, 2, tzinfo=UTC), run_conf=conf)


def featurize_metrics(results: Path, day: int) -> dict:
    return json.loads((results / run_key(day) / "metrics" / "featurize.json").read_text())


def features_by_path(results: Path, day: int) -> dict[str, bytes]:
    table = pd.read_parquet(results / run_key(day) / "features")
    pairs = zip(table["path"], table["features"], strict=True)
    return {path: np.asarray(vector, np.float32).tobytes() for path, vector in pairs}


def change_images(images: Path, tmp_path: Path) -> set[str]:
    """Add 20 images, replace 5 with other content and delete 10; returns the replaced ones' URIs."""
    extra = generate_images(tmp_path / "extra", 25, seed=99)
    for index, source in enumerate(extra[:20]):
        shutil.copy(source, images / "Training" / source.parent.name / f"new_{index}.jpg")
    existing = sorted(images.rglob("*_100.jpg"))
    replaced = existing[:5]
    for target, source in zip(replaced, extra[20:], strict=True):
        target.write_bytes(source.read_bytes())
    for gone in existing[100:110]:
        gone.unlink()
    return {f"file:{path}" for path in replaced}


@dataclass(frozen=True)
class Night:
    """One night's DAG run, and what it left behind that a later night changes."""

    state: str
    tasks: dict[str, str]  # task id -> state
    latest: str | None  # latest.json's run key after the night
    events: list[dict]  # the features asset events after the night
    images: set[str]  # the images' URIs the night saw
    to_featurize: dict | None  # find_changes' count of the images featurize would compute, before any step


@dataclass(frozen=True)
class Nights:
    images: Path
    results: Path
    replaced: set[str]  # the images whose content night 21 finds replaced
    nights: dict[int, Night]


@pytest.fixture(scope="module")
def nights(
    load_dag_for_module, airflow_db, spark_steps_in_process, seed_model_cache, features_asset_events, tmp_path_factory
) -> Nights:
    """One results folder through a week: a first night, a night after changes, one without,
    one with a broken image, a full refresh of nothing changed, and one with another engine.
    The nights share a model cache (warm from the first) and a metadata DB, as nightly runs do;
    their steps run in this process's Spark session (spark_steps_in_process). The tests read what
    each night left."""
    tmp_path = tmp_path_factory.mktemp("nightly")
    images, results = tmp_path / "images", tmp_path / "results"
    generate_images(images, IMAGES, seed=3)
    seed_model_cache(results)
    dag = load_dag_for_module("local")
    conf = {"images_uri": str(images), "results_uri": str(results), "weights": "random"}
    nights: dict[int, Night] = {}

    def run(day: int, night_conf: dict) -> None:
        current = {f"file:{path}" for path in images.rglob("*.jpg")}
        dag_run = night(dag, day, night_conf)
        latest = results / "latest.json"
        nights[day] = Night(
            state=dag_run.state,
            tasks={ti.task_id: ti.state for ti in dag_run.get_task_instances()},
            latest=json.loads(latest.read_text())["run_key"] if latest.exists() else None,
            events=features_asset_events(),
            images=current,
            to_featurize=dag_run.get_task_instance("find_changes").xcom_pull(
                task_ids="find_changes", key="to_featurize"
            ),
        )

    run(20, conf)
    replaced = change_images(images, tmp_path)
    run(21, conf)
    run(22, conf)
    (images / "Training" / "Kiwi" / "broken.jpg").write_bytes(b"not a jpeg")
    run(23, conf | {"max_error_share": 0.0})
    (images / "Training" / "Kiwi" / "broken.jpg").unlink()
    run(24, conf | {"full_refresh": True})  # the images and params of night 21, the last good run
    # dag.test runs every night's tasks on this one DAG object, whose params keep the last conf's values
    # (a deployment parses the DAG afresh for each task): say full_refresh is off again.
    run(25, conf | {"engine": "tensorflow", "full_refresh": False})
    return Nights(images, results, replaced, nights)


def test_nightly_runs_featurise_only_what_changed_and_skip_when_nothing_did(nights):
    results, replaced = nights.results, nights.replaced
    first = nights.nights[20]
    assert first.state == "success"
    assert first.latest == run_key(20)

    second = nights.nights[21]
    assert second.state == "success"
    metrics = featurize_metrics(results, 21)
    assert metrics["model_rows"] == 25  # the job's own counter of rows through the network
    assert (metrics["new"], metrics["changed"], metrics["removed"], metrics["reused"]) == (20, 5, 10, 185)
    current = second.images
    before, after = features_by_path(results, 20), features_by_path(results, 21)
    assert set(after) == current and len(current) == 210
    for path in (current & set(before)) - replaced:
        assert after[path] == before[path]  # carried over bit for bit
    assert all(after[path] != before[path] for path in replaced)
    csv = pd.read_csv(results / run_key(21) / "pca_features.csv")
    assert set(csv["path"]) == current and len(csv) == 210
    report = json.loads((results / run_key(21) / "report.json").read_text())
    assert (report["previous_run"], report["counts"]["through_network"]) == (run_key(20), 25)
    events = second.events
    assert [event["run"] for event in events[-2:]] == [run_key(20), run_key(21)]
    assert events[-1] == {
        "run": run_key(21), "csv": str(results / run_key(21) / "pca_features.csv"),
        "features": str(results / run_key(21) / "features"), "k": report["pca"]["k"],
        "images": 210, "new": 20, "changed": 5, "removed": 10, "reused": 185, "errors": 0,
        "seconds": report["seconds"],  # no cluster on the local target
    }  # fmt: skip

    third = nights.nights[22]
    assert third.state == "success"
    assert third.tasks == {"validate_params": "success", "find_changes": "success", "write_report": "success",
                           **dict.fromkeys(STEPS, "skipped")}  # fmt: skip
    report = json.loads((results / run_key(22) / "report.json").read_text())
    assert (report["status"], report["unchanged_since"]) == ("unchanged", run_key(21))
    assert not (results / run_key(22) / "metrics").exists()  # no Spark job ran
    assert third.latest == run_key(21)
    assert len(third.events) == len(events)  # no event for a run that computed nothing

    failed = nights.nights[23]
    assert failed.state == "failed"
    assert featurize_metrics(results, 23)["model_rows"] == 1  # only the new file
    assert failed.latest == run_key(21)  # not moved
    assert failed.tasks["write_report"] == "success" and len(failed.events) == len(events)  # reported, not announced

    other_engine = nights.nights[25]
    assert other_engine.state == "success"
    metrics = featurize_metrics(results, 25)
    assert (metrics["model_rows"], metrics["reused"]) == (210, 0)  # other features: all computed again


def test_the_count_a_night_is_sized_for_is_what_featurize_computes(nights):
    # find_changes counts from the kept listings, before any step; the job counts its own rows.
    for day in (20, 21, 23, 24, 25):
        assert nights.nights[day].to_featurize["images"] == featurize_metrics(nights.results, day)["model_rows"], day
    assert nights.nights[21].to_featurize["why"] == f"25 of 210 images new or changed since {run_key(20)}"
    assert nights.nights[20].to_featurize["why"] == "no earlier good run: all 200 images"
    assert nights.nights[25].to_featurize["why"] == f"engine changed since {run_key(24)}: all 210 images"
    assert nights.nights[22].to_featurize is None  # unchanged: nothing to count
    # Only the last good run's listing is kept (night 25's, its images those of night 24).
    assert [path.parent.name for path in (nights.results / "_listings").rglob("listing.tsv.gz")] == [
        json.loads((nights.results / "latest.json").read_text())["listing_digest"]
    ]


def test_full_refresh_computes_everything_even_when_nothing_changed(nights):
    results = nights.results
    refreshed = nights.nights[24]
    # The images and params of the last good run (night 21): without full_refresh, a skipped night.
    assert (refreshed.images, nights.nights[23].latest) == (nights.nights[21].images, run_key(21))
    assert refreshed.state == "success"
    metrics = featurize_metrics(results, 24)
    assert (metrics["model_rows"], metrics["reused"]) == (210, 0)
    assert refreshed.latest == run_key(24)


def test_every_night_leaves_a_report_a_person_reads_offline(nights):
    """report.html beside report.json: a good night, a night with nothing to do, a failed night."""
    results = nights.results

    def page(day: int) -> str:
        html = (results / run_key(day) / "report.html").read_text()
        # One self-contained file: nothing to fetch, nothing to run.
        assert "<script" not in html and "http://" not in html and "https://" not in html
        return html

    good = page(21)
    assert "fruitflow run 20261121T020000Z" in good and ">succeeded</span>" in good
    assert good.count('src="data:image/png;base64,') == 2  # explained variance and the scatter
    report = json.loads((results / run_key(21) / "report.json").read_text())
    assert f"k = <b>{report['pca']['k']}</b>" in good
    for name, value in [("new", 20), ("changed", 5), ("reused", 185), ("removed", 10)]:
        assert f"<td>{name}</td><td class=number>{value}</td>" in good
    assert f"compared with</td><td>{run_key(20)}</td>" in good

    unchanged = page(22)
    assert ">unchanged</span>" in unchanged and f"unchanged since {run_key(21)}" in unchanged
    assert "data:image/png" not in unchanged and "<h2>Steps</h2>" not in unchanged
    assert "<td>featurize</td><td>skipped</td>" in unchanged

    failed = page(23)
    assert ">failed</span>" in failed and "Task <b>check_outputs</b>" in failed
    assert "1 of 211 images could not be featurised" in failed
    assert "Training/Kiwi/broken.jpg</td>" in failed  # the first error rows, from the errors Parquet
