"""report.html: report.json for a person. One self-contained file (pictures embedded, no script,
no link to fetch), readable offline: what happened, what to look at, what it cost."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from html import escape

from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.storage import Storage

ERROR_ROWS = 5  # the first unreadable images shown; the errors Parquet has them all
STATUS_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "unchanged": "#57606a"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
.status { color: white; padding: 0.15em 0.6em; border-radius: 0.3em; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #eee; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8em; white-space: pre-wrap; word-break: break-word; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: 0.4em 0; }
.problem { color: #cf222e; }
.headline { font-size: 1.1em; padding: 0.6em 0.8em; background: #f6f8fa; border-left: 0.3em solid; }
"""


def first_error_rows(parquet_part: bytes, limit: int = ERROR_ROWS) -> list[dict]:
    """(path, error) of the first ``limit`` rows of one part of the errors Parquet."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(parquet_part), columns=["path", "error"]).slice(0, limit).to_pylist()


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    def cell(value, tag="td") -> str:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        text = f"{value:,}" if number and isinstance(value, int) else str(value)
        return f"<{tag}{' class=number' if number else ''}>{escape(text)}</{tag}>"

    head = "<tr>" + "".join(cell(name, "th") for name in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _size(size: int | None) -> str:
    if size is None:
        return "unknown"
    scaled, unit = float(size), "bytes"
    for larger in ("kB", "MB", "GB"):
        if scaled < 1000:
            break
        scaled, unit = scaled / 1000, larger
    return f"{size:,} bytes" if unit == "bytes" else f"{scaled:,.1f} {unit}"


def _picture(title: str, png: bytes | None) -> str:
    if not png:
        return f"<p>{escape(title)}: not drawn by this run.</p>"
    data = base64.b64encode(png).decode("ascii")
    caption = escape(title)
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def headline(report: dict) -> str:
    """What happened and what to do, in one line of text: the first thing report.html says."""
    status = report["status"]
    if status == "failed":
        task = report.get("failed_task") or "a task"
        reason = report.get("error_line") or "no error recorded: see the task log"
        return f"Failed at {task}: {reason}. What to do: {report.get('advice') or 'read the task log'}."
    if status == "unchanged":
        return f"Nothing to do: unchanged since {report.get('unchanged_since')}, no cluster started."
    counts, pca = report.get("counts", {}), report.get("pca", {})
    return (
        f"Succeeded: {counts.get('featurised')} of {counts.get('images')} images featurised, "
        f"k = {pca.get('k')} components. Nothing to do."
    )


def _headline(report: dict) -> list[str]:
    colour = STATUS_COLOURS.get(report["status"], "#57606a")
    parts = [f"<p class=headline style='border-color:{colour}'>{escape(headline(report))}</p>"]
    clusters = report.get("clusters")
    if clusters:
        ended = [
            f"{cluster['id']} {cluster.get('state', 'not readable from EMR')}"
            + (f" ({reason})" if (reason := _emr_reason(cluster)) else "")
            for cluster in clusters
        ]
        parts.append(f"<p>Clusters this run started: {escape('; '.join(ended))}</p>")
    return parts


def _emr_reason(cluster: dict) -> str:
    """EMR's code and message for how a cluster of report.json's ``clusters`` ended."""
    return ": ".join(filter(None, [cluster.get("reason_code"), cluster.get("reason") or cluster.get("error")]))


def _outcome(report: dict) -> list[str]:
    parts = []
    if report.get("message"):
        parts.append(f"<p>{escape(report['message'])}</p>")
    if report.get("unchanged_since"):
        previous = escape(report["unchanged_since"])
        parts.append(f"<p>That run's report: <a href='../{previous}/report.html'>{previous}/report.html</a></p>")
    if report.get("changes"):
        parts.append(
            "<p>Why it ran:</p><ul>" + "".join(f"<li>{escape(line)}</li>" for line in report["changes"]) + "</ul>"
        )
    if report.get("failed_task"):
        parts.append(f"<h2>What failed</h2><p>Task <b>{escape(report['failed_task'])}</b>:</p>")
        parts.append(f"<pre>{escape(report.get('error') or 'no error recorded: see the task log')}</pre>")
    for problem in report.get("problems", []):
        if problem in (report.get("error") or ""):
            continue  # already the failed task's error
        parts.append(f"<p class=problem>{escape(problem)}</p>")
    return parts


def _counts(report: dict, error_rows: list[dict]) -> list[str]:
    counts = report.get("counts")
    if not counts:
        finished = report.get("steps_finished") or {}
        if not finished:
            return []
        rows = [
            (step, ", ".join(f"{key}={value}" for key, value in metrics.items())) for step, metrics in finished.items()
        ]
        return ["<h2>What the finished steps counted</h2>", _table(rows, ("step", "metrics"))]
    names = ("images", "featurised", "errors", "new", "changed", "reused", "removed", "through_network", "csv_rows")
    parts = ["<h2>Images</h2>", _table([(name.replace("_", " "), counts[name]) for name in names])]
    if error_rows:
        more = counts["errors"] - len(error_rows)
        shown = f"The first {len(error_rows)} of {counts['errors']:,} images" if more > 0 else "The images"
        parts.append(f"<p>{shown} that could not be featurised:</p>")
        parts.append(_table([(row["path"], row["error"]) for row in error_rows], ("path", "error")))
        if more > 0:
            parts.append(f"<p>{more:,} more in {escape(report['outputs']['errors'])}</p>")
    return parts


def _pca(report: dict, pictures: Mapping[str, bytes | None]) -> list[str]:
    pca = report.get("pca")
    if not pca:
        return []
    summary = (
        f"<p>k = <b>{pca['k']}</b> components explain {pca['explained_variance']:.1%} of the variance "
        f"(threshold {pca['variance_threshold']:.0%}).</p>"
    )
    return [
        "<h2>Features</h2>",
        summary,
        _picture("explained variance by number of components", pictures.get("explained_variance")),
        _picture("the images on the first two principal components", pictures.get("scatter")),
    ]


def _time_and_cost(report: dict) -> list[str]:
    parts = []
    if report.get("seconds"):
        rows = [(step, round(seconds, 1)) for step, seconds in report["seconds"].items()]
        parts += ["<h2>Steps</h2>", _table(rows, ("step", "seconds"))]
    cluster = report.get("cluster")
    if cluster and "error" in cluster:
        parts += [
            "<h2>Cluster</h2>",
            f"<p>{escape(cluster['id'])}: not readable from EMR ({escape(cluster['error'])})</p>",
        ]
    elif cluster:
        phases = [
            (name, seconds if seconds is not None else "not reached")
            for name, seconds in cluster["phases_seconds"].items()
        ]
        hours = [(kind, round(seconds / 3600, 2)) for kind, seconds in cluster["instance_seconds"].items()]
        parts += [
            f"<h2>Cluster {escape(cluster['id'])}: {escape(cluster['state'])}</h2>",
            _table(phases, ("phase", "seconds")),
            _table(hours, ("instances", "hours")),
            f"<p>EMR normalized instance hours: {escape(str(cluster['normalized_instance_hours']))}</p>",
        ]
        cost = cluster.get("estimated_cost")
        if cost and cost["total"] is not None:
            parts.append(f"<p>Estimated cost: <b>{cost['total']:.2f}</b> (at FRUITFLOW_EMR_HOURLY_PRICES)</p>")
        elif cost:
            parts.append(f"<p>No cost estimate: no price for {escape(', '.join(cost['missing_prices']))}</p>")
    return parts + _launches(report)


def _launches(report: dict) -> list[str]:
    """Every cluster the run started, and how each ended: a launch that failed is billed too."""
    rows = [
        (
            cluster["id"],
            cluster.get("state", "not readable from EMR"),
            _emr_reason(cluster),
            round(sum(cluster.get("instance_seconds", {}).values()) / 3600, 2),
        )
        for cluster in report.get("clusters", [])
    ]
    if not rows:
        return []
    return ["<h2>Clusters</h2>", _table(rows, ("cluster", "ended", "EMR's reason", "instance hours"))]


def _storage(report: dict) -> list[str]:
    parts = ["<h2>Storage</h2>", f"<p>This run wrote {_size(report.get('bytes_written'))}.</p>"]
    retention = report.get("retention") or {}
    if retention.get("enabled"):
        verb = "would delete (dry run)" if retention["dry_run"] else "deleted"
        rows = [(entry["run"], _size(entry["bytes"]), entry["reason"]) for entry in retention["deleted"]]
        parts.append(f"<p>Retention {verb} {len(rows)} old run folders ({_size(retention['deleted_bytes'])}).</p>")
        if rows:
            parts.append(_table(rows, ("run", "size", "why")))
    return parts


def render_report_html(report: dict, pictures: Mapping[str, bytes | None], error_rows: list[dict]) -> str:
    """The page for ``report`` (report.json's content); ``pictures`` the run's PNGs by name
    ("explained_variance", "scatter"), None where not drawn; ``error_rows`` first_error_rows'."""
    status = report["status"]
    colour = STATUS_COLOURS.get(status, "#57606a")
    overview = [
        ("target", report["target"]),
        ("finished", report["finished_at"]),
        ("images", report["inputs"]["images_uri"]),
        ("weights", report["inputs"]["weights"]),
        *([("cluster", report["cluster_id"])] if report.get("cluster_id") else []),
        *([("executors", report["executor_plan"])] if report.get("executor_plan") else []),
        *([("cluster size", report["cluster_size"]["why"])] if report.get("cluster_size") else []),
        *([("compared with", report["previous_run"])] if report.get("previous_run") else []),
        *([("CSV", report["outputs"]["csv"])] if report.get("outputs") else []),
    ]
    body = [
        f"<h1>fruitflow run {escape(report['run'])} "
        f"<span class=status style='background:{colour}'>{escape(status)}</span></h1>",
        *_headline(report),
        _table(overview),
        *_outcome(report),
        *_counts(report, error_rows),
        *_pca(report, pictures),
        *_time_and_cost(report),
        *_storage(report),
        "<h2>Tasks</h2>",
        _table([(task_id, state or "not run") for task_id, state in report["tasks"].items()], ("task", "state")),
    ]
    title = f"fruitflow {report['run']}: {status}"
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def report_html_for(report: dict, run: PipelineRun, storage: Storage) -> str:
    """``render_report_html`` with what the run left in its folder: its two pictures, and the first
    rows of its errors Parquet when it has error rows, from one part: the largest, which holds rows
    wherever any part does (an empty part is its schema alone)."""
    pictures = {
        name: storage.read_bytes(uri) if storage.exists(uri) else None
        for name, uri in (("explained_variance", run.plot_uri), ("scatter", run.scatter_uri))
    }
    error_rows = []
    if report.get("counts", {}).get("errors"):
        parts = [listed for listed in storage.files_under(run.errors_uri) if listed.path.endswith(".parquet")]
        if parts:
            largest = max(parts, key=lambda listed: (listed.size, listed.path))
            error_rows = first_error_rows(storage.read_bytes(f"{run.errors_uri}/{largest.path}"))
    return render_report_html(report, pictures, error_rows)
