"""The DAG's own operators: a pipeline step on local Spark, the provider's cluster creator that
never leaves a DAG run two clusters, and its step sensor with a better failure message; and the
failure callback that keeps each failed task's error for the run's report."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.links.emr import EmrClusterLink, EmrLogsLink, get_log_uri
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.providers.amazon.aws.triggers.emr import EmrCreateJobFlowTrigger
from airflow.providers.amazon.aws.utils.waiter import WAITER_POLICY_NAME_MAPPING, WaitPolicy
from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from botocore.exceptions import WaiterError

from fruitflow_pipeline.cluster import EXECUTORS_TAG, terminate_clusters_of
from fruitflow_pipeline.launch import READY_STATES, launch_outcome
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import LocalSettings
from fruitflow_pipeline.steps import local_command, step_named

FAILURE_XCOM_KEY = "failure"
# create_cluster's clusters of this try, oldest first: its count of launches, kept across a deferral.
LAUNCHED_XCOM_KEY = "launched_clusters"


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
    """EmrCreateJobFlowOperator that hands on a ready cluster, relaunches one that a transient
    reason ended before it was ready, and leaves a DAG run at most one live cluster.

    A create retried after a lost response (EMR accepted the first request) or a cleared
    and rerun DAG run would otherwise start a second cluster: this one first terminates the
    live clusters tagged with this DAG run, then creates the new one. It then waits, with the
    provider's ``job_flow_waiting`` waiter (or its trigger, deferred), until EMR says the cluster
    is WAITING or RUNNING; a cluster that ends first is judged by ``launch_outcome``: relaunched,
    up to ``max_launches`` clusters per try, or the task fails naming EMR's reason. The report
    finds every cluster of the run by its tag (``clusters_of_run``).
    """

    def __init__(self, *, max_launches: int, ready_timeout: timedelta, poll_seconds: float, **kwargs):
        delay = max(1, round(poll_seconds))  # the provider's waiters and triggers take whole seconds
        super().__init__(
            wait_policy=WaitPolicy.WAIT_FOR_COMPLETION,
            waiter_delay=delay,
            waiter_max_attempts=max(1, int(ready_timeout.total_seconds() // delay)),
            **kwargs,
        )
        self.max_launches = max_launches

    def execute(self, context) -> str:
        tags = {tag["Key"]: tag["Value"] for tag in self.job_flow_overrides.get("Tags", [])}
        self.log.info("executor plan: %s", tags.get(EXECUTORS_TAG))
        stale = terminate_clusters_of(self.hook.conn, context["run_id"])
        if stale:
            self.log.warning("terminated %s, started earlier by this DAG run, before creating its cluster", stale)
        return self.launch(context, [])

    def launch(self, context, launched: list[str]) -> str:
        """Create one more cluster and wait for it to be ready (deferred when the deployment defers)."""
        response = self.hook.create_job_flow(self.job_flow_overrides)
        self._job_flow_id = response["JobFlowId"]
        launched = [*launched, self._job_flow_id]
        context["ti"].xcom_push(LAUNCHED_XCOM_KEY, launched)
        self.log.info("cluster %s created (%d of at most %d)", self._job_flow_id, len(launched), self.max_launches)
        link = {"context": context, "operator": self, "region_name": self.hook.conn_region_name,
                "aws_partition": self.hook.conn_partition, "job_flow_id": self._job_flow_id}  # fmt: skip
        EmrClusterLink.persist(**link)  # the links of the task's page, as the provider's operator keeps them
        EmrLogsLink.persist(**link, log_uri=get_log_uri(emr_client=self.hook.conn, job_flow_id=self._job_flow_id))
        if self.deferrable:
            self.defer(
                trigger=EmrCreateJobFlowTrigger(
                    job_flow_id=self._job_flow_id,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                    waiter_delay=self.waiter_delay,
                    waiter_max_attempts=self.waiter_max_attempts,
                    waiter_name=WAITER_POLICY_NAME_MAPPING[WaitPolicy.WAIT_FOR_COMPLETION],
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.waiter_max_attempts * self.waiter_delay + 60),
            )
        try:
            self.hook.get_waiter(WAITER_POLICY_NAME_MAPPING[WaitPolicy.WAIT_FOR_COMPLETION]).wait(
                ClusterId=self._job_flow_id,
                WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts},
            )
        except WaiterError:
            pass  # ended, or not ready in time: the cluster's state and reason decide what follows
        return self.ready_or_relaunch(context, launched)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> str:
        # The trigger's event says only whether the waiter succeeded; the cluster itself says why.
        launched = context["ti"].xcom_pull(task_ids=self.task_id, key=LAUNCHED_XCOM_KEY)
        return self.ready_or_relaunch(context, list(launched))

    def ready_or_relaunch(self, context, launched: list[str]) -> str:
        self._job_flow_id = launched[-1]  # on_kill terminates it, also after a deferral
        cluster = self.hook.conn.describe_cluster(ClusterId=self._job_flow_id)["Cluster"]
        outcome = launch_outcome(cluster, len(launched), self.max_launches)
        if outcome.state in READY_STATES:
            self.log.info(outcome.explanation)
            return outcome.cluster_id
        if outcome.state not in ("TERMINATED", "TERMINATED_WITH_ERRORS"):
            self.hook.conn.terminate_job_flows(JobFlowIds=[outcome.cluster_id])
        if not outcome.relaunch:
            raise AirflowFailException(outcome.explanation)
        self.log.warning(outcome.explanation)
        return self.launch(context, launched)
