"""After the steps: check what they wrote; at the very end, summarise the run in report.json,
whether it succeeded or failed."""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping
from dataclasses import asdict
from datetime import UTC, datetime

from fruitflow.contract import ExplainedVariance, csv_columns
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.steps import PIPELINE
from fruitflow_pipeline.storage import Storage


class OutputCheckFailed(RuntimeError):
    """The steps finished but their outputs are not what a good run leaves."""


# The CSV's header is its first line: path, label and up to 1,280 "pc_<n>" names fit in far less.
CSV_HEAD_BYTES = 64 * 1024


def csv_header(head: bytes) -> list[str] | None:
    """The column names on the first line of a CSV's first bytes; None when no whole line is there."""
    first_line, newline, _ = head.partition(b"\n")
    if not newline:
        return None
    return next(csv.reader([first_line.decode("utf-8", errors="replace").rstrip("\r")]))


def unexpected_columns(header: list[str], k: int, shown: int = 3) -> list[str]:
    """The first ``shown`` names that differ from path, label, pc_1..pc_k, by position: none in a good run."""
    pairs = enumerate(zip(header, csv_columns(k), strict=False), start=1)
    return [f"{position}: {found!r}" for position, (found, expected) in pairs if found != expected][:shown]


def summarise_outputs(run: PipelineRun, storage: Storage) -> dict:
    """Counts, k, timings and output URIs of a run whose three steps all finished: the counts from
    the jobs' metrics files, the CSV checked by its size and header alone, never by its rows."""
    metrics = {step.name: step.metrics.from_json(storage.read_text(run.metrics_uri(step.name))) for step in PIPELINE}
    explained = ExplainedVariance.from_json(storage.read_text(run.explained_variance_uri))
    csv_bytes = storage.size(run.csv_uri)
    if csv_bytes is None:
        raise OutputCheckFailed(f"the CSV {run.csv_uri} was not written")
    header = (csv_header(storage.read_head(run.csv_uri, CSV_HEAD_BYTES)) if csv_bytes else None) or []
    featurize, pca, export = metrics["featurize"], metrics["pca"], metrics["export_csv"]
    return {
        "counts": {
            "images": featurize.images,
            "featurised": featurize.featurised,
            "errors": featurize.errors,
            "error_share": round(featurize.errors / featurize.images, 6) if featurize.images else 0.0,
            "pca_rows": pca.images,
            "csv_rows": export.rows,
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
            "csv_unexpected_columns": unexpected_columns(header, explained.k),
        },
        "csv": {"bytes": csv_bytes, "bytes_written_by_export": export.bytes},
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
    counts, pca, written = summary["counts"], summary["pca"], summary["csv"]
    problems = []
    if counts["pca_rows"] != counts["featurised"]:
        problems.append(f"PCA reduced {counts['pca_rows']} rows but {counts['featurised']} images were featurised")
    if counts["csv_rows"] != counts["featurised"]:
        problems.append(f"the CSV has {counts['csv_rows']} rows but {counts['featurised']} images were featurised")
    if written["bytes"] != written["bytes_written_by_export"]:
        problems.append(
            f"the CSV is {written['bytes']:,} bytes but export_csv wrote {written['bytes_written_by_export']:,}: "
            "it was changed or cut short since"
        )
    if pca["csv_unexpected_columns"] or pca["csv_columns"] != pca["k"] + 2:
        unexpected = ", ".join(pca["csv_unexpected_columns"])
        problems.append(
            f"the CSV's header has {pca['csv_columns']} columns"
            + (f" (unexpected column {unexpected})" if unexpected else "")
            + f", expected path, label, pc_1..pc_{pca['k']}"
        )
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
    clusters: list[dict] | None = None,
    cluster_size: dict | None = None,
    teardowns: Collection[str] = (),
    unchanged_since: str | None = None,
    changes: list[str] | None = None,
    retention: dict | None = None,
    bytes_written: int | None = None,
) -> dict:
    """report.json of a finished run, succeeded or failed.

    ``task_states`` are the run's tasks in graph order, without the report's own task;
    ``failures`` the error of each task that failed; ``outputs`` the checked outputs'
    summary when the checks ran; ``steps`` the metrics of the steps that finished. ``teardowns``
    are the tasks whose failure, as in Airflow, does not fail the run (the teardowns without
    ``on_failure_fail_dagrun``); a failed one is still the ``failed_task`` to look at.
    ``unchanged_since`` names the last good run when nothing changed since, so nothing ran;
    ``changes`` says otherwise why the run went ahead (find_changes' lines);
    ``cluster_usage`` the cluster's phases and instance time (cluster_usage.usage_summary), on EMR;
    ``clusters`` every cluster the run started and how each ended (cluster_usage.launch_entry);
    ``cluster_size`` the size chosen for the night and why (params.ClusterSize), on EMR;
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
    if clusters:
        report["clusters"] = list(clusters)
    if cluster_size is not None:
        report["cluster_size"] = dict(cluster_size)
    if retention is not None:
        report["retention"] = retention
    if changes:
        report["changes"] = list(changes)
    if unchanged_since:
        report["unchanged_since"] = unchanged_since
        report["message"] = (
            f"unchanged since {unchanged_since}: same images, params, weights and jobs' code; nothing to compute"
        )
    if outputs is not None:
        return report | outputs | {"problems": problems_in(outputs, run.max_error_share)}
    return report | {"steps_finished": dict(steps), "problems": []}
