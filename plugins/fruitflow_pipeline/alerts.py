"""On-call alerts: who hears about a night, through Airflow's own notifiers.

One message per event: the run failed; terminate_cluster failed (its cluster may still be running);
the run is late (not finished FRUITFLOW_ALERT_LATE_AFTER after it was queued); and, opted in with
FRUITFLOW_ALERT_ON_SUCCESS, a one-line summary of a good or unchanged night. A good night sends
nothing otherwise. ``notifiers`` is the one place that lists where alerts go; a notifier that fails
is logged and never changes a run's outcome: ``send`` catches its error, in write_report as in the
DAG's callback and the triggerer.
"""

from __future__ import annotations

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
REPORT_TASK = "write_report"


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
    e.g. ``SmtpNotifier(to="oncall@example.com", subject="{{ alert.subject }}", html_content="{{ alert.message }}")``.
    The late alert runs them in the triggerer, through their ``async_notify``."""
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


def notifier_context(alert: Alert, context: Mapping) -> dict:
    """``context`` with ``alert`` for the notifiers' templates. dag.test() hands DAG callbacks the
    scheduler's SerializedDAG as ``dag``, which a notifier cannot render with: left out then."""
    kept = {key: value for key, value in context.items() if key != "dag"}
    if hasattr(context.get("dag"), "get_template_env"):
        kept["dag"] = context["dag"]
    return kept | {"alert": alert}


def send(alert: Alert, context: Mapping, settings: Settings) -> int:
    """Hand ``alert`` to every notifier; returns how many took it. A failing one is logged only."""
    sent = 0
    for notifier in notifiers(settings):
        try:
            notifier(notifier_context(alert, context))
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
            notifier.context = notifier_context(alert, context)
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


def duration_text(duration: timedelta) -> str:
    """``duration`` as FRUITFLOW_ALERT_LATE_AFTER writes it: 4h, 1h30m, 20s."""
    hours, rest = divmod(round(duration.total_seconds()), 3600)
    minutes, seconds = divmod(rest, 60)
    return "".join(f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if value)


def late_alert(dag_run: Mapping, late_after: timedelta, deadline_time) -> Alert:
    """The run is not finished ``late_after`` after it was queued."""
    late = duration_text(late_after)
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


# Where the alerts are sent from.


class NightAlerts:
    """The run's alerts. write_report, the run's last task, sends them once report.json is written
    (``after_report``): it has every fact in hand, and the run's outcome is its report's status.
    The DAG's on_failure_callback (``on_run_failed``) covers the runs that end without a report:
    validate_params failed (write_report, its teardown, does not run) or write_report itself failed.
    It runs where Airflow runs DAG callbacks (the DAG processor; ``dag.test()`` in process) and
    needs no XCom: the run id, the failed task and the runbook's advice."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def after_report(self, report: Mapping, report_html_uri: str) -> None:
        """Send what ``report`` (report.json's content) calls for; never raises."""
        from airflow.sdk import get_current_context

        from fruitflow_pipeline.operators import FAILURE_XCOM_KEY

        try:
            context = get_current_context()
            dag_run_id, tasks = context["run_id"], report.get("tasks", {})
            if tasks.get(TERMINATE_TASK) == "failed":
                why = context["ti"].xcom_pull(task_ids=TERMINATE_TASK, key=FAILURE_XCOM_KEY)
                facts = {**report, "failures": {TERMINATE_TASK: why}}
                idle_timeout = self.settings.emr.idle_timeout_seconds
                send(
                    cluster_left_running_alert(facts, report_html_uri, dag_run_id, idle_timeout), context, self.settings
                )
            other_failures = [task for task, state in tasks.items() if state == "failed" and task != TERMINATE_TASK]
            if report.get("status") == "failed" and (other_failures or tasks.get(TERMINATE_TASK) != "failed"):
                failed_first = {**report, "failed_task": (other_failures or [report.get("failed_task")])[0]}
                send(run_failed_alert(failed_first, report_html_uri, dag_run_id), context, self.settings)
            elif report.get("status") in ("succeeded", "unchanged") and self.settings.alerts.on_success:
                send(success_summary_alert(report), context, self.settings)
        except Exception:
            log.exception("could not send the alerts of run %s", report.get("run"))

    def on_run_failed(self, context) -> None:
        """DAG on_failure_callback: alert for a failed run whose report was not written."""
        task_id = context["ti"].task_id if context.get("ti") else None
        if task_id not in (PLAN_TASK, REPORT_TASK):
            return  # write_report ran, and sent the run's alerts
        try:
            reason = (
                "the params or the deployment's settings were refused: no cluster was started"
                if task_id == PLAN_TASK
                else "the run failed, and its report could not be written"
            )
            facts = {"failed_task": task_id, "error_line": f"{reason} (see the task log of {task_id})"}
            send(run_failed_alert(facts, None, context["run_id"]), context, self.settings)
        except Exception:
            log.exception("could not send the alert of failed run %s", context.get("run_id"))


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
