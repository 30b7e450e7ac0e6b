"""Nightly runs on the local target: only what changed goes through the network, nothing runs when
nothing changed, a failed run never moves latest.json, and each good run emits an asset event."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fruitflow.sample_images import generate_images

STEPS = ["empty_run_folder", "upload_code", "featurize", "pca", "export_csv", "check_outputs"]


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


def asset_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        query = query.where(AssetModel.name == "fruitflow_features")
        return [event.extra for event in session.scalars(query.order_by(AssetEvent.id))]


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    generate_images(folder, 2000, seed=3)
    return folder


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


def test_nightly_runs_featurise_only_what_changed_and_skip_when_nothing_did(load_dag, airflow_db, images, tmp_path):
    results = tmp_path / "results"
    dag = load_dag("local")
    conf = {"images_uri": str(images), "results_uri": str(results), "weights": "random"}

    first = night(dag, 20, conf)
    assert first.state == "success"
    assert json.loads((results / "latest.json").read_text())["run_key"] == run_key(20)

    replaced = change_images(images, tmp_path)
    second = night(dag, 21, conf)
    assert second.state == "success"
    metrics = featurize_metrics(results, 21)
    assert metrics["model_rows"] == 25  # the job's own counter of rows through the network
    assert (metrics["new"], metrics["changed"], metrics["removed"], metrics["reused"]) == (20, 5, 10, 1985)
    current = {f"file:{path}" for path in images.rglob("*.jpg")}
    before, after = features_by_path(results, 20), features_by_path(results, 21)
    assert set(after) == current and len(current) == 2010
    for path in (current & set(before)) - replaced:
        assert after[path] == before[path]  # carried over bit for bit
    assert all(after[path] != before[path] for path in replaced)
    csv = pd.read_csv(results / run_key(21) / "pca_features.csv")
    assert set(csv["path"]) == current and len(csv) == 2010
    report = json.loads((results / run_key(21) / "report.json").read_text())
    assert (report["previous_run"], report["counts"]["through_network"]) == (run_key(20), 25)
    events = asset_events()
    assert [event["run"] for event in events[-2:]] == [run_key(20), run_key(21)]
    assert events[-1] == {
        "run": run_key(21), "csv": str(results / run_key(21) / "pca_features.csv"),
        "features": str(results / run_key(21) / "features"), "k": report["pca"]["k"],
        "images": 2010, "new": 20, "changed": 5, "removed": 10, "reused": 1985, "errors": 0,
    }  # fmt: skip

    third = night(dag, 22, conf)
    states = {ti.task_id: ti.state for ti in third.get_task_instances()}
    assert third.state == "success"
    assert states == {"validate_params": "success", "find_changes": "success", "write_report": "success",
                      **dict.fromkeys(STEPS, "skipped")}  # fmt: skip
    report = json.loads((results / run_key(22) / "report.json").read_text())
    assert (report["status"], report["unchanged_since"]) == ("unchanged", run_key(21))
    assert not (results / run_key(22) / "metrics").exists()  # no Spark job ran
    assert json.loads((results / "latest.json").read_text())["run_key"] == run_key(21)
    assert len(asset_events()) == len(events)  # no event for a run that computed nothing

    (images / "Training" / "Kiwi" / "broken.jpg").write_bytes(b"not a jpeg")
    failed = night(dag, 23, conf | {"max_error_share": 0.0})
    assert failed.state == "failed"
    assert featurize_metrics(results, 23)["model_rows"] == 1  # only the new file
    assert json.loads((results / "latest.json").read_text())["run_key"] == run_key(21)  # not moved

    (images / "Training" / "Kiwi" / "broken.jpg").unlink()
    other_engine = night(dag, 24, conf | {"engine": "tensorflow"})
    assert other_engine.state == "success"
    metrics = featurize_metrics(results, 24)
    assert (metrics["model_rows"], metrics["reused"]) == (2010, 0)  # other features: all computed again


def test_full_refresh_computes_everything_even_when_nothing_changed(load_dag, airflow_db, tmp_path, fruit_images):
    results = tmp_path / "results"
    dag = load_dag("local")
    conf = {"images_uri": str(fruit_images), "results_uri": str(results), "weights": "random"}
    assert night(dag, 20, conf).state == "success"
    refreshed = night(dag, 21, conf | {"full_refresh": True})
    assert refreshed.state == "success"
    metrics = featurize_metrics(results, 21)
    assert (metrics["model_rows"], metrics["reused"]) == (30, 0)
    assert json.loads((results / "latest.json").read_text())["run_key"] == run_key(21)
