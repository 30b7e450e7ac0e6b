"""The last safety net for EMR clusters: when a fruits_features run ends failed, terminate the
clusters it started.

The DAG's teardown terminates the cluster in every run it reaches. A run can end without it:
marked failed as a whole from the UI or the API, or a worker lost before the teardown. Airflow
tells listeners about every DAG run that ends failed, wherever it is decided (the scheduler, or
the API server for a run marked by hand), so this listener, loaded as a plugin by both, finds the
run's clusters by their DAG run tag and terminates them. Where the teardown did run, it finds none.
"""

from __future__ import annotations

import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from fruitflow_pipeline.cluster import terminate_clusters_of
from fruitflow_pipeline.settings import Settings, Target

DAG_ID = "fruits_features"

log = logging.getLogger(__name__)


@hookimpl
def on_dag_run_failed(dag_run, msg: str) -> None:
    if dag_run.dag_id != DAG_ID:
        return
    try:
        settings = Settings.from_env()
        if settings.target is not Target.EMR:
            return
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        terminated = terminate_clusters_of(EmrHook(aws_conn_id=settings.aws_conn_id).conn, dag_run.run_id)
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
