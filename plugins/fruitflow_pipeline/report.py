"""After the steps: check what they wrote and summarise the run in report.json."""

from __future__ import annotations

import json
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


def build_report(run: PipelineRun, storage: Storage, target: str, cluster_id: str | None = None) -> dict:
    metrics = {step.name: step.metrics.from_json(storage.read_text(run.metrics_uri(step.name))) for step in PIPELINE}
    explained = ExplainedVariance.from_json(storage.read_text(run.explained_variance_uri))
    if not storage.exists(run.csv_uri):
        raise OutputCheckFailed(f"the CSV {run.csv_uri} was not written")
    header, csv_rows = count_csv_rows(storage, run.csv_uri)
    featurize = metrics["featurize"]
    return {
        "run": run.key,
        "target": target,
        "cluster_id": cluster_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {"images_uri": run.images_uri, "weights": run.weights, "code_uri": run.code_uri},
        "counts": {
            "images": featurize.images,
            "featurised": featurize.featurised,
            "errors": featurize.errors,
            "error_share": round(featurize.errors / featurize.images, 6) if featurize.images else 0.0,
            "csv_rows": csv_rows,
        },
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
        },
    }


def problems_in(report: dict, max_error_share: float) -> list[str]:
    counts, pca = report["counts"], report["pca"]
    problems = []
    if counts["csv_rows"] != counts["featurised"]:
        problems.append(f"the CSV has {counts['csv_rows']} rows but {counts['featurised']} images were featurised")
    if pca["csv_columns"] != pca["k"] + 2:
        problems.append(f"the CSV has {pca['csv_columns']} columns, expected path, label and {pca['k']} components")
    if counts["error_share"] > max_error_share:
        problems.append(
            f"{counts['errors']} of {counts['images']} images could not be featurised "
            f"({counts['error_share']:.1%} > the tolerated {max_error_share:.1%}); see {report['outputs']['errors']}"
        )
    return problems


def check_and_write_report(run: PipelineRun, storage: Storage, target: str, cluster_id: str | None = None) -> dict:
    """Write report.json (also when a check fails, so the on-call engineer has the numbers),
    then raise OutputCheckFailed listing every failed check."""
    report = build_report(run, storage, target, cluster_id)
    problems = problems_in(report, run.max_error_share)
    report["status"] = "failed" if problems else "succeeded"
    report["problems"] = problems
    storage.write_text(run.report_uri, json.dumps(report, indent=2))
    if problems:
        raise OutputCheckFailed("; ".join(problems))
    return report
