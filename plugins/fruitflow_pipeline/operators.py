"""The DAG's own operators: a pipeline step on local Spark, the provider's cluster creator that
never leaves a DAG run two clusters, and its step sensor with a better failure message; and the
failure callback that keeps each failed task's error for the run's report."""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.links.emr import get_log_uri
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from fruitflow_pipeline.cluster import EXECUTORS_TAG, terminate_clusters_of
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.step_logs import StepLogs, wait_for_step_logs
from fruitflow_pipeline.steps import local_command, step_named

FAILURE_XCOM_KEY = "failure"
STEP_LOGS_XCOM_KEY = "step_logs"  # a failed step's StepLogs, for the report and the alert
STEP_LOG_POLL_SECONDS = 10.0


def record_failure(context) -> None:
    """on_failure_callback: keep the task's error as an XCom, for the report written at the end."""
    context["ti"].xcom_push(FAILURE_XCOM_KEY, str(context.get("exception") or "failed"))


class LocalSparkStepOperator(BaseOperator):
    """Runs one pipeline step with ``spark-submit`` on local Spark: the same step, script and
    arguments the EMR target submits, against local folders."""

    template_fields = ("run",)
    ui_color = "#fdf2d0"

    def __init__(self, *, step: str, run: Any, local: LocalSettings, **kwargs):
        super().__init__(**kwargs)
        self.step = step
        self.run = run
        self.local = local
        self._hook: SubprocessHook | None = None

    def execute(self, context) -> dict:
        """Run the step; hands the run on to the next step."""
        command, environment = local_command(step_named(self.step), PipelineRun.from_xcom(self.run), self.local)
        self._hook = SubprocessHook()
        result = self._hook.run_command(command, env={**os.environ, **environment})
        if result.exit_code != 0:
            raise AirflowException(f"step {self.step} failed with exit code {result.exit_code}: {result.output}")
        return self.run

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.send_sigterm()


class EmrStepWatcher(EmrStepSensor):
    """EmrStepSensor for one of the steps an add-steps task added, whose failure names the step,
    its state, EMR's reason, the job's own error line and where its logs are in S3.

    ``step_ids`` is the add-steps task's output (``add_steps.output``: the ids in the order the
    steps were added), so the step comes from the operator object and the graph shows the edge.
    The stock failure message is ``EMR job failed: None`` for a cancelled step and never points
    at the step's own log folder, which is the first thing to open at 3 a.m. A failed step's
    stdout.gz is read here instead (step_logs: waiting up to ``log_wait_seconds`` for EMR to copy
    it), its error line and traceback tail printed into the task log and kept as an XCom.
    """

    template_fields = (*EmrStepSensor.template_fields, "step_ids")

    def __init__(self, *, step_ids: Any, step_index: int, log_wait_seconds: float, **kwargs):
        super().__init__(step_id="", **kwargs)
        self.step_ids = step_ids
        self.step_index = step_index
        self.log_wait_seconds = log_wait_seconds
        self.step_logs: StepLogs | None = None

    def render_template_fields(self, context, jinja_env=None) -> None:
        # Rendered before execute and again before execute_complete after a deferral: both need the id.
        super().render_template_fields(context, jinja_env)
        self.step_id = self.step_ids[self.step_index]

    def failure_message_from_response(self, response: dict[str, Any]) -> str:
        step = response["Step"]
        status = step["Status"]
        details = status.get("FailureDetails") or {}
        parts = [f"step {step.get('Name')} ({step.get('Id', self.step_id)}) ended {status['State']}"]
        log_uri = get_log_uri(emr_client=self.hook.conn, job_flow_id=self.job_flow_id)
        folder = f"s3://{log_uri.rstrip('/')}/{self.job_flow_id}/steps/{self.step_id}/" if log_uri else None
        if status["State"] == "FAILED" and folder:
            self.step_logs = self.read_step_logs(folder)
            if self.step_logs.error_line:
                parts.append(f"job error: {self.step_logs.error_line}")
            else:
                parts.append(
                    f"no error line in the step's logs after {self.log_wait_seconds:.0f} s "
                    "(EMR copies them to S3 every five minutes): open the folder below later"
                )
        if status["State"] == "CANCELLED":
            parts.append(self.why_cancelled())
        if details:
            parts.append(f"reason: {details.get('Reason')}; message: {details.get('Message')}")
            if details.get("LogFile"):
                parts.append(f"log file: {details['LogFile']}")
        if folder:
            parts.append(
                # Spark's PythonRunner copies the PySpark driver's stdout and stderr to the JVM's
                # stdout: the job's error line is in the step's stdout.gz (seen in the rehearsal).
                f"step logs (stdout.gz holds the job's error and traceback, stderr.gz Spark's log): {folder}"
            )
        return "; ".join(parts)

    def read_step_logs(self, folder: str) -> StepLogs:
        """The failed step's logs, waited for; its error line and traceback tail go to the task log."""
        self.log.info("reading the failed step's logs in %s (waiting up to %.0f s)", folder, self.log_wait_seconds)
        logs = wait_for_step_logs(
            S3Hook(aws_conn_id=self.aws_conn_id).conn,
            folder,
            self.log_wait_seconds,
            min(self.poke_interval, STEP_LOG_POLL_SECONDS),
        )
        if logs.error_line:
            self.log.error("the job's error: %s", logs.error_line)
        else:
            self.log.error("no error line in %s after %.0f s", folder, self.log_wait_seconds)
        if logs.traceback_tail:
            self.log.error("the end of the job's traceback (stdout.gz):\n%s", "\n".join(logs.traceback_tail))
        return logs

    def keep_step_logs(self, context) -> None:
        if self.step_logs is not None:
            context["ti"].xcom_push(STEP_LOGS_XCOM_KEY, self.step_logs.to_xcom())

    def poke(self, context) -> bool:
        try:
            return super().poke(context)
        except AirflowException:
            self.keep_step_logs(context)
            raise

    def why_cancelled(self) -> str:
        """A step is cancelled when an earlier one failed, or when its cluster never got ready:
        a failed bootstrap ends the cluster TERMINATED_WITH_ERRORS with every step cancelled."""
        cluster_status = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]["Status"]
        if cluster_status["State"] != "TERMINATED_WITH_ERRORS":
            return "it was cancelled because an earlier step failed: read that step's log first"
        reason = cluster_status.get("StateChangeReason") or {}
        said = ": ".join(filter(None, [reason.get("Code"), reason.get("Message")])) or "no reason given"
        return (
            f"the cluster ended TERMINATED_WITH_ERRORS ({said}); a failed bootstrap action's logs are under "
            "node/<instance id>/bootstrap-actions/ in the cluster's log folder"
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        if event and event.get("status") != "success":
            response = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)
            message = self.failure_message_from_response(response)
            self.keep_step_logs(context)
            raise AirflowException(f"EMR job failed: {message}")
        super().execute_complete(context, event)


class EmrRunClusterOperator(EmrCreateJobFlowOperator):
    """EmrCreateJobFlowOperator that leaves a DAG run at most one cluster.

    A create retried after a lost response (EMR accepted the first request) or a cleared
    and rerun DAG run would otherwise start a second cluster: this one first terminates the
    live clusters tagged with this DAG run, then creates the new one.
    """

    def execute(self, context) -> str | None:
        tags = {tag["Key"]: tag["Value"] for tag in self.job_flow_overrides.get("Tags", [])}
        self.log.info("executor plan: %s", tags.get(EXECUTORS_TAG))
        stale = terminate_clusters_of(self.hook.conn, context["run_id"])
        if stale:
            self.log.warning("terminated %s, started earlier by this DAG run, before creating its cluster", stale)
        return super().execute(context)
