"""What the on-call engineer reads first, for report.json, report.html and the alerts: the one-line
reason a run failed (a failed step's own error line), what to do about its failed task (the short form
of the runbook in the DAG's docs, "When it fails"). Every cluster the run started is report.json's
``clusters`` (cluster_usage.run_clusters_for_report)."""

from __future__ import annotations

TERMINATE_TASK = "terminate_cluster"
# The runbook's advice for each task that can fail, in one line; dags/fruits_features.md has the long form.
ADVICE = {
    "validate_params": "a param, the conf or an allowed location is wrong: trigger again with a fixed form",
    "find_changes": "the images could not be listed: check AWS access (aws_default, IAM role, bucket policy)",
    "empty_run_folder": "check AWS access; the folder may belong to another DAG run (the task log says which)",
    "upload_code": "check AWS access to the results bucket (aws_default, IAM role, bucket policy)",
    "size_cluster": "no cluster was started: its log names what the night's size could not be planned from "
    "(a changed FRUITFLOW_EMR_FLEETS, a missing count from find_changes); fix it and clear the task",
    "create_cluster": "EMR refused or could not start the cluster: check IAM roles, subnet and instance limits",
    "add_steps": "EMR refused the steps: check the cluster's state in the EMR console",
    "step": "read the job's error line above and the step's stdout.gz; a cancelled step only means an earlier "
    "one failed",
    "check_outputs": "the outputs are off: report.json has the numbers, errors/ each bad image and why; "
    "latest.json still names the last good run",
    "remove_old_runs": "only retention failed (FRUITFLOW_KEEP_RUNS; s3:DeleteObject under the results prefix); "
    "the outputs are good",
    TERMINATE_TASK: "the cluster may still be running: terminate it by hand in the EMR console (or "
    "aws emr terminate-clusters --cluster-ids <id>); EMR's idle timeout stops it otherwise",
}
STEP_TASKS = ("featurize", "pca", "export_csv")  # the local target's step tasks; the EMR ones are watch_<step>


def advice_for(task_id: str | None) -> str | None:
    """The runbook's one-line advice for a failed ``task_id``; None for a run that did not fail."""
    if task_id is None:
        return None
    if task_id.startswith("watch_") or task_id in STEP_TASKS:
        return ADVICE["step"]
    return ADVICE.get(task_id, "read the task's log")


def first_line(text: str | None, limit: int = 300) -> str | None:
    """The first non-empty line of ``text``, cut at ``limit`` characters."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0][:limit] if lines else None


def on_call_facts(report: dict, step_logs: dict | None) -> dict:
    """What report.json adds for the on-call engineer, from the report itself and the failed step's
    logs (operators.STEP_LOGS_XCOM_KEY's XCom, when a step failed)."""
    failed_task = report.get("failed_task")
    facts = {
        "error_line": (step_logs or {}).get("error_line") or first_line(report.get("error")),
        "advice": advice_for(failed_task),
    }
    if step_logs:
        facts["step_logs"] = step_logs["folder"]
    return facts
