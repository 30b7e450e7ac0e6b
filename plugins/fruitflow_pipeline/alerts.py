"""On-call alerts: who hears about a night, through Airflow's own notifiers.

One message per event: the run failed; terminate_cluster failed (its cluster may still be running);
the run is late (not finished FRUITFLOW_ALERT_LATE_AFTER after it was queued); and, opted in with
FRUITFLOW_ALERT_ON_SUCCESS, a one-line summary of a good or unchanged night. A good night sends
nothing otherwise. ``notifiers`` is the one place that lists where alerts go; a notifier that fails
is logged and never changes a run's outcome (Airflow runs these callbacks after the run's state is set).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from fruitflow_pipeline.oncall import TERMINATE_TASK, advice_for, first_line
from fruitflow_pipeline.settings import Settings

log = logging.getLogger(__name__)

# SNS Publish: "Subjects must be UTF-8 text with no line breaks or control characters, and less
# than 100 characters long" (Amazon SNS API Reference, Publish). Kept ASCII for email gateways.
SUBJECT_LIMIT = 99
PLAN_TASK = "validate_params"
CLUSTER_TASK = "create_cluster"


@dataclass(frozen=True)
class Alert:
    """One message: a subject under SNS's limit, and a body a person reads on a phone."""

    subject: str
    message: str

    def __post_init__(self):
        printable = "".join(c if " " <= c <= "~" else "?" for c in " ".join(self.subject.split()))
        if len(printable) > SUBJECT_LIMIT:
            printable = printable[: SUBJECT_LIMIT - 3] + "..."
        object.__setattr__(self, "subject", printable)


def notifiers(settings: Settings) -> list:
    """Where alerts go: the one place to add a notifier. Each is an Airflow notifier rendered with
    the alert in its context, so its templates read ``{{ alert.subject }}`` and ``{{ alert.message }}``;
    e.g. ``SlackWebhookNotifier(slack_webhook_conn_id="oncall", text="{{ alert.message }}")``."""
    found = []
    if settings.alerts.sns_topic_arn:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        found.append(
            SnsNotifier(
                aws_conn_id=settings.aws_conn_id,
                target_arn=settings.alerts.sns_topic_arn,
                subject="{{ alert.subject }}",
                message="{{ alert.message }}",
            )
        )
    return found


def send(alert: Alert, context: Mapping, settings: Settings) -> int:
    """Hand ``alert`` to every notifier; returns how many took it. A failing one is logged only."""
    sent = 0
    for notifier in notifiers(settings):
        try:
            notifier({**context, "alert": alert})
            sent += 1
        except Exception:
            log.exception("alert %r not sent through %s", alert.subject, type(notifier).__name__)
    if sent:
        log.info("alert sent: %s", alert.subject)
    return sent


async def send_async(alert: Alert, context: Mapping, settings: Settings) -> int:
    """``send`` in the triggerer, where deadline alerts run: each notifier's async_notify."""
    sent = 0
    for notifier in notifiers(settings):
        try:
            notifier.context = {**context, "alert": alert}
            await notifier
            sent += 1
        except Exception:
            log.exception("alert %r not sent through %s", alert.subject, type(notifier).__name__)
    if sent:
        log.info("alert sent: %s", alert.subject)
    return sent


# The messages: pure functions of what report.json (or, without one, the run) says.


def _lines(*lines: str | None) -> str:
    return "\n".join(line for line in lines if line) + "\n"


def _clusters_line(report: Mapping) -> str | None:
    clusters = report.get("clusters") or (
        [{"id": report["cluster_id"], "state": "unknown"}] if report.get("cluster_id") else []
    )
    if not clusters:
        return None
    return "Clusters: " + ", ".join(f"{cluster['id']} ({cluster['state']})" for cluster in clusters)


def run_failed_alert(report: Mapping, report_html_uri: str | None, dag_run_id: str) -> Alert:
    """The run failed: its key, the failed task, the one-line reason, the clusters, where to read more."""
    run, task = report.get("run") or dag_run_id, report.get("failed_task") or "unknown task"
    reason = report.get("error_line") or first_line(report.get("error")) or "no error recorded: see the task log"
    return Alert(
        subject=f"fruitflow FAILED {run}: {task}: {reason}",
        message=_lines(
            f"fruitflow run {run} failed at {task}.",
            f"Reason: {reason}",
            f"What to do: {report.get('advice') or advice_for(task)}",
            _clusters_line(report),
            f"Report: {report_html_uri}" if report_html_uri else "Report: none written (the run stopped before it)",
            f"Step logs: {report['step_logs']}" if report.get("step_logs") else None,
            f"Airflow: DAG fruits_features, run {dag_run_id}",
        ),
    )


def cluster_left_running_alert(
    report: Mapping, report_html_uri: str | None, dag_run_id: str, idle_timeout_seconds: int
) -> Alert:
    """terminate_cluster failed: the cluster id, and that it may still be running, first."""
    ended = {"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"}
    clusters = report.get("clusters") or [{"id": report.get("cluster_id") or "unknown", "state": "unknown"}]
    alive = [cluster["id"] for cluster in clusters if cluster["state"] not in ended] or [clusters[-1]["id"]]
    ids, run = " ".join(alive), report.get("run") or dag_run_id
    return Alert(
        subject=f"fruitflow: EMR cluster {ids} may still be running (terminate_cluster failed)",
        message=_lines(
            f"EMR cluster {ids} may still be running: terminate_cluster failed in fruitflow run {run}.",
            f"Terminate it by hand: aws emr terminate-clusters --cluster-ids {ids} (or the EMR console); "
            f"EMR's idle timeout stops it {idle_timeout_seconds} s after its last step otherwise.",
            f"Why terminate_cluster failed: {report.get('failures', {}).get(TERMINATE_TASK) or 'see its task log'}",
            _clusters_line(report),
            f"Report: {report_html_uri}" if report_html_uri else None,
            f"Airflow: DAG fruits_features, run {dag_run_id}",
        ),
    )


def late_alert(dag_run: Mapping, late_after: timedelta, deadline_time) -> Alert:
    """The run is not finished ``late_after`` after it was queued."""
    hours = late_after.total_seconds() / 3600
    late = f"{hours:g}h" if hours >= 1 else f"{late_after.total_seconds() / 60:g}m"
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id")
    return Alert(
        subject=f"fruitflow LATE: run {run_id} not finished after {late}",
        message=_lines(
            f"fruitflow run {run_id} (DAG fruits_features) was queued at {dag_run.get('queued_at')} "
            f"and has not finished by {deadline_time} (FRUITFLOW_ALERT_LATE_AFTER={late}).",
            "What to do: open the run's grid. A watch_<step> task still running: its log shows the step's "
            "state (a slow or stuck step). create_cluster or a watcher waiting on a cluster that is not "
            "RUNNING: EMR may not get capacity (EMR console, the cluster's events).",
            f"Airflow: DAG fruits_features, run {run_id}, state {dag_run.get('state')}",
        ),
    )


def success_summary_alert(report: Mapping) -> Alert:
    """FRUITFLOW_ALERT_ON_SUCCESS: a good or unchanged night in one line."""
    if report.get("status") == "unchanged":
        line = f"fruitflow {report['run']}: unchanged since {report['unchanged_since']}, nothing computed"
    else:
        counts, cost = report.get("counts", {}), (report.get("cluster") or {}).get("estimated_cost") or {}
        line = (
            f"fruitflow {report['run']}: {counts.get('featurised')} of {counts.get('images')} images featurised, "
            f"{counts.get('errors')} errors, k={report.get('pca', {}).get('k')}"
            + (f", cost {cost['total']:.2f}" if cost.get("total") is not None else "")
        )
    return Alert(subject=line, message=line + "\n")


# Airflow's callbacks: they gather the facts from the run, then send.


class NightAlerts:
    """The DAG's on_failure_callback and on_success_callback: each reads the run's report.json (its
    location from validate_params' plan), and, without one, what the run itself says."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def run_report(self, context) -> tuple[dict, str | None]:
        """(report.json's content or {}, report.html's URI or None)."""
        from fruitflow_pipeline.run import PipelineRun
        from fruitflow_pipeline.storage import storage_for

        plan = context["ti"].xcom_pull(task_ids=PLAN_TASK, key="run") if "ti" in context else None
        if not plan:
            return {}, None
        pipeline_run, store = PipelineRun.from_xcom(plan), storage_for(self.settings.target, self.settings.aws_conn_id)
        if not store.exists(pipeline_run.report_uri):
            return {}, None
        return json.loads(store.read_text(pipeline_run.report_uri)), pipeline_run.report_html_uri

    def failed_tasks(self, context, report: Mapping) -> dict[str, str]:
        """The failed tasks and their errors: report.json's, or the run's own without one."""
        from fruitflow_pipeline.operators import FAILURE_XCOM_KEY

        ti = context["ti"]
        states = report.get("tasks") or ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])[ti.run_id]
        return {
            task_id: ti.xcom_pull(task_ids=task_id, key=FAILURE_XCOM_KEY) or ""
            for task_id, state in states.items()
            if state == "failed"
        }

    def on_failure(self, context) -> None:
        try:
            report, report_html = self.run_report(context)
            failures = self.failed_tasks(context, report)
            facts = {**report, "failures": failures}
            if not report and failures:  # the run stopped before its report, or the report failed
                task = next(iter(failures))
                facts |= {"failed_task": task, "error": failures[task]}
                facts |= {"cluster_id": context["ti"].xcom_pull(task_ids=CLUSTER_TASK)}
            dag_run_id = context["run_id"]
            if TERMINATE_TASK in failures:
                idle_timeout = self.settings.emr.idle_timeout_seconds
                send(cluster_left_running_alert(facts, report_html, dag_run_id, idle_timeout), context, self.settings)
            if set(failures) - {TERMINATE_TASK} or not failures:
                send(run_failed_alert(facts, report_html, dag_run_id), context, self.settings)
        except Exception:
            log.exception("could not gather the failed run's facts: no alert sent for run %s", context.get("run_id"))

    def on_success(self, context) -> None:
        if not self.settings.alerts.on_success:
            return
        try:
            report, _ = self.run_report(context)
            if report:
                send(success_summary_alert(report), context, self.settings)
        except Exception:
            log.exception("could not send the success summary of run %s", context.get("run_id"))


async def night_is_late(context: Mapping, late_after_seconds: float) -> None:
    """The DAG's deadline alert callback, run in the triggerer with the run's context from the
    scheduler (``dag_run`` as the REST API gives it, and ``deadline``). Airflow 3.3.2 keeps a failed
    run's deadlines (it prunes them on success only): a run that already failed has had its alert."""
    if context["dag_run"].get("state") not in ("queued", "running"):
        log.info("deadline passed for a run that ended %s: no late alert", context["dag_run"].get("state"))
        return
    alert = late_alert(
        context["dag_run"], timedelta(seconds=late_after_seconds), context.get("deadline", {}).get("deadline_time")
    )
    log.warning("%s", alert.subject)
    await send_async(alert, context, Settings.from_env())


def late_night_deadline(settings: Settings):
    """Airflow's deadline alert for a run not finished FRUITFLOW_ALERT_LATE_AFTER after it was
    queued; None when the setting is unset."""
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    late_after = settings.alerts.late_after
    if late_after is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=late_after,
        callback=AsyncCallback(night_is_late, kwargs={"late_after_seconds": late_after.total_seconds()}),
    )
