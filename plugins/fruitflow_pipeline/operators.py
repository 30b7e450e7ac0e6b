"""The DAG's own operators: a pipeline step on local Spark, the provider's cluster creator that
never leaves a DAG run two clusters, and its step sensor with a better failure message; and the
failure callback that keeps each failed task's error for the run's report."""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.amazon.aws.links.emr import get_log_uri
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from fruitflow_pipeline.cluster import EXECUTORS_TAG, terminate_clusters_of
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.steps import local_command, step_named

FAILURE_XCOM_KEY = "failure"


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
    its state, EMR's reason and where its logs are in S3.

    ``step_ids`` is the add-steps task's output (``add_steps.output``: the ids in the order the
    steps were added), so the step comes from the operator object and the graph shows the edge.
    The stock failure message is ``EMR job failed: None`` for a cancelled step and never points
    at the step's own log folder, which is the first thing to open at 3 a.m.
    """

    template_fields = (*EmrStepSensor.template_fields, "step_ids")

    def __init__(self, *, step_ids: Any, step_index: int, **kwargs):
        super().__init__(step_id="", **kwargs)
        self.step_ids = step_ids
        self.step_index = step_index

    def render_template_fields(self, context, jinja_env=None) -> None:
        # Rendered before execute and again before execute_complete after a deferral: both need the id.
        super().render_template_fields(context, jinja_env)
        self.step_id = self.step_ids[self.step_index]

    def failure_message_from_response(self, response: dict[str, Any]) -> str:
        step = response["Step"]
        status = step["Status"]
        details = status.get("FailureDetails") or {}
        parts = [f"step {step.get('Name')} ({step.get('Id', self.step_id)}) ended {status['State']}"]
        if status["State"] == "CANCELLED":
            parts.append(self.why_cancelled())
        if details:
            parts.append(f"reason: {details.get('Reason')}; message: {details.get('Message')}")
            if details.get("LogFile"):
                parts.append(f"log file: {details['LogFile']}")
        log_uri = get_log_uri(emr_client=self.hook.conn, job_flow_id=self.job_flow_id)
        if log_uri:
            parts.append(
                # Spark's PythonRunner copies the PySpark driver's stdout and stderr to the JVM's
                # stdout: the job's error line is in the step's stdout.gz (seen in the rehearsal).
                f"step logs (stdout.gz holds the job's error and traceback, stderr.gz Spark's log): "
                f"s3://{log_uri.rstrip('/')}/{self.job_flow_id}/steps/{self.step_id}/"
            )
        return "; ".join(parts)

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
            raise AirflowException(f"EMR job failed: {self.failure_message_from_response(response)}")
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
