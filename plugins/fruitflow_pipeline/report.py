"""After the steps: check what they wrote; at the very end, summarise the run in report.json,
whether it succeeded or failed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict
from datetime import UTC, datetime

from fruitflow.contract import ExplainedVariance
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.steps import PIPELINE
from fruitflow_pipeline.storage import Storage


class OutputCheckFailed(RuntimeError):
    """The steps finished but their outputs are not what a good run leaves."""


def count_csv_rows(storage: Storage, uri: str) -> tuple[list[str], int]:
    """(header, number of data rows) of the CSV, streamed; quoted newlines count as one row."""
    rows = storage.csv_rows(uri)
    header = next(rows, [])
    return header, sum(1 for _ in rows)


def summarise_outputs(run: PipelineRun, storage: Storage) -> dict:
    """Counts, k, timings and output URIs of a run whose three steps all finished."""
    metrics = {step.name: step.metrics.from_json(storage.read_text(run.metrics_uri(step.name))) for step in PIPELINE}
    explained = ExplainedVariance.from_json(storage.read_text(run.explained_variance_uri))
    if not storage.exists(run.csv_uri):
        raise OutputCheckFailed(f"the CSV {run.csv_uri} was not written")
    header, csv_rows = count_csv_rows(storage, run.csv_uri)
    featurize = metrics["featurize"]
    return {
        "counts": {
            "images": featurize.images,
            "featurised": featurize.featurised,
            "errors": featurize.errors,
            "error_share": round(featurize.errors / featurize.images, 6) if featurize.images else 0.0,
            "csv_rows": csv_rows,
            # Against the previous run's outputs: rows carried over, and what went through the network.
            "reused": featurize.reused,
            "new": featurize.new,
            "changed": featurize.changed,
            "removed": featurize.removed,
            "through_network": featurize.model_rows,
        },
        "previous_run": run.previous_key,
        "pca": {
            "k": explained.k,
            "variance_threshold": explained.variance_threshold,
            "explained_variance": explained.explained_variance,
            "csv_columns": len(header),
        },
        "seconds": {name: step_metrics.seconds for name, step_metrics in metrics.items()},
        "outputs": {
            "features": run.features_uri,
            "errors": run.errors_uri,
            "pca": run.pca_uri,
            "csv": run.csv_uri,
            "explained_variance": run.explained_variance_uri,
            "plot": run.plot_uri,
            "scatter": run.scatter_uri,
        },
    }


def problems_in(summary: dict, max_error_share: float) -> list[str]:
    counts, pca = summary["counts"], summary["pca"]
    problems = []
    if counts["csv_rows"] != counts["featurised"]:
        problems.append(f"the CSV has {counts['csv_rows']} rows but {counts['featurised']} images were featurised")
    if pca["csv_columns"] != pca["k"] + 2:
        problems.append(f"the CSV has {pca['csv_columns']} columns, expected path, label and {pca['k']} components")
    if counts["error_share"] > max_error_share:
        problems.append(
            f"{counts['errors']} of {counts['images']} images could not be featurised "
            f"({counts['error_share']:.1%} > the tolerated {max_error_share:.1%}); see {summary['outputs']['errors']}"
        )
    return problems


def steps_so_far(run: PipelineRun, storage: Storage) -> dict:
    """What the steps that finished reported, for a run whose outputs could not be checked:
    each finished step's metrics, by step name."""
    return {
        step.name: asdict(step.metrics.from_json(storage.read_text(run.metrics_uri(step.name))))
        for step in PIPELINE
        if storage.exists(run.metrics_uri(step.name))
    }


def run_report(
    run: PipelineRun,
    target: str,
    task_states: Mapping[str, str | None],
    failures: Mapping[str, str],
    outputs: dict | None,
    steps: Mapping[str, dict],
    cluster_id: str | None = None,
    cluster_usage: dict | None = None,
    teardowns: Collection[str] = (),
    unchanged_since: str | None = None,
    retention: dict | None = None,
    bytes_written: int | None = None,
) -> dict:
    """report.json of a finished run, succeeded or failed.

    ``task_states`` are the run's tasks in graph order, without the report's own task;
    ``failures`` the error of each task that failed; ``outputs`` the checked outputs'
    summary when the checks ran; ``steps`` the metrics of the steps that finished. As in
    Airflow, a failed teardown does not fail the run, but it is the ``failed_task`` to look at.
    ``unchanged_since`` names the last good run when nothing changed since, so nothing ran;
    ``cluster_usage`` the cluster's phases and instance time (cluster_usage.usage_summary), on EMR;
    ``retention`` what remove_old_runs deleted, when it ran; ``bytes_written`` the size of the
    run's folder before the report itself.
    """
    failed = [task_id for task_id, state in task_states.items() if state == "failed"]
    succeeded = all(state == "success" for task_id, state in task_states.items() if task_id not in teardowns)
    status = "succeeded" if succeeded and outputs is not None else "failed"
    if unchanged_since and not failed:
        status = "unchanged"
    report = {
        "run": run.key,
        "status": status,
        "target": target,
        "cluster_id": cluster_id,
        "executor_plan": run.executor_plan,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {"images_uri": run.images_uri, "weights": run.weights, "code_uri": run.code_uri},
        "failed_task": failed[0] if failed else None,
        "error": failures.get(failed[0]) if failed else None,
        "tasks": dict(task_states),
        "bytes_written": bytes_written,
    }
    if cluster_usage is not None:
        report["cluster"] = cluster_usage
    if retention is not None:
        report["retention"] = retention
    if unchanged_since:
        report["unchanged_since"] = unchanged_since
        report["message"] = f"unchanged since {unchanged_since}: same images and params, nothing to compute"
    if outputs is not None:
        return report | outputs | {"problems": problems_in(outputs, run.max_error_share)}
    return report | {"steps_finished": dict(steps), "problems": []}
