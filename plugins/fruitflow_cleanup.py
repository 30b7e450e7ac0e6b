"""The last safety net for EMR clusters: when a fruits_features run ends failed, terminate the
clusters it started.

The DAG's teardown terminates the cluster in every run it reaches. A run can end without it:
marked failed as a whole from the UI or the API, or a worker lost before the teardown. Airflow
tells listeners about every DAG run that ends failed, wherever it is decided (the scheduler, or
the API server for a run marked by hand), so this listener, loaded as a plugin by both, finds the
run's clusters by their DAG run tag and terminates them. Where the teardown did run, it finds none.

It runs inside the scheduler, so it costs it only what it must: a run whose create_cluster never
started (refused by validate_params, unchanged, failed before the cluster) makes no AWS call at all;
the calls it does make are bounded (AWS_CALL_LIMITS), and any failure is logged, never raised.
"""

from __future__ import annotations

import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from sqlalchemy.orm import object_session

from fruitflow_pipeline.cluster import terminate_clusters_of
from fruitflow_pipeline.settings import Settings, Target

DAG_ID = "fruits_features"
CLUSTER_TASK_ID = "create_cluster"
# create_cluster's states that say it never ran, so started no cluster (a finished state sets a start date too).
NEVER_RAN = {None, "scheduled", "upstream_failed", "skipped", "removed"}
# botocore's Config: seconds to connect and to wait for an answer, and attempts in all (standard
# retry mode), so a slow or unreachable EMR holds the scheduler for at most about a minute a call.
AWS_CALL_LIMITS = {"connect_timeout": 5, "read_timeout": 15, "retries": {"total_max_attempts": 3, "mode": "standard"}}

log = logging.getLogger(__name__)


def may_have_started_a_cluster(dag_run) -> bool:
    """Whether ``dag_run``'s create_cluster may have run, read in the session that holds the run (the
    scheduler's or the API server's own); True when that cannot be told, so no cluster is missed."""
    session = object_session(dag_run)
    if session is None:
        return True
    cluster_task = dag_run.get_task_instance(CLUSTER_TASK_ID, session=session)
    return cluster_task is not None and cluster_task.state not in NEVER_RAN


@hookimpl
def on_dag_run_failed(dag_run, msg: str) -> None:
    if dag_run.dag_id != DAG_ID:
        return
    try:
        settings = Settings.from_env()
        if settings.target is not Target.EMR or not may_have_started_a_cluster(dag_run):
            return
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        emr = EmrHook(aws_conn_id=settings.aws_conn_id, config=AWS_CALL_LIMITS).conn
        terminated = terminate_clusters_of(emr, dag_run.run_id)
        if terminated:
            log.warning("DAG run %s ended failed (%s): terminated its cluster(s) %s", dag_run.run_id, msg, terminated)
    except Exception:
        # A listener must never break the scheduler or the API; EMR's idle timeout remains.
        log.exception(
            "could not look for clusters of failed DAG run %s; EMR's idle timeout will stop them", dag_run.run_id
        )


class FruitflowCleanupPlugin(AirflowPlugin):
    name = "fruitflow_cleanup"
    listeners = [sys.modules[__name__]]
