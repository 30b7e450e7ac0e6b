"""The transient EMR cluster: one function builds the whole RunJobFlow request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fruitflow_pipeline.run import PipelineRun, join_uri
from fruitflow_pipeline.settings import EmrSettings
from fruitflow_pipeline.sizing import ExecutorPlan

# The last tag lets EMR's v2 managed service policy (AmazonEMRServicePolicy_v2) act on the
# cluster's instances; the tags are propagated to every EC2 instance of the cluster.
TAGS = {"project": "fruitflow", "managed-by": "airflow", "for-use-with-amazon-emr-managed-policies": "true"}
DAG_RUN_TAG = "airflow-dag-run-id"
EXECUTORS_TAG = "fruitflow-executors"
NAME_PREFIX = "fruitflow-"
LIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]


@dataclass(frozen=True)
class ClusterShape:
    release_label: str
    primary_instance_type: str
    core_instance_type: str
    core_instance_count: int
    task_instance_type: str
    task_instance_count: int
    task_market: str  # "SPOT" or "ON_DEMAND"


def _instance_groups(shape: ClusterShape) -> list[dict]:
    groups = [
        {"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
         "InstanceType": shape.primary_instance_type, "InstanceCount": 1},
        {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
         "InstanceType": shape.core_instance_type, "InstanceCount": shape.core_instance_count},
    ]  # fmt: skip
    if shape.task_instance_count:
        groups.append(
            {"Name": "task", "InstanceRole": "TASK", "Market": shape.task_market,
             "InstanceType": shape.task_instance_type, "InstanceCount": shape.task_instance_count}
        )  # fmt: skip
    return groups


def _spark_configurations(emr: EmrSettings, executors: ExecutorPlan) -> list[dict]:
    return [
        {
            "Classification": "spark-env",
            "Configurations": [{"Classification": "export", "Properties": {"PYSPARK_PYTHON": emr.python}}],
        },
        {
            "Classification": "spark-defaults",
            "Properties": {
                "spark.pyspark.python": emr.python,
                "spark.pyspark.driver.python": emr.python,
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                # The Python workers (TensorFlow, decoded images) live in each executor's overhead.
                **executors.spark_defaults(),
                "spark.driver.memory": "4g",
                # Room for PCA's partials, collected to the 4g driver (docs/decisions/0008-pca-partials.md).
                "spark.driver.maxResultSize": "2g",
                "spark.python.worker.reuse": "true",
                "spark.sql.adaptive.enabled": "true",
            },
        },
    ]


def dag_run_tag(dag_run_id: str) -> str:
    """A DAG run id as an EMR tag value: characters EMR does not allow in tags become '_'."""
    return re.sub(r"[^\w .:/=+\-@]", "_", dag_run_id, flags=re.ASCII)[:256]


def worker_groups(shape: ClusterShape) -> list[tuple[str, int]]:
    """The groups that run executors: core nodes, and task nodes when there are any."""
    return [
        (shape.core_instance_type, shape.core_instance_count),
        (shape.task_instance_type, shape.task_instance_count),
    ]


def job_flow_spec(
    run: PipelineRun, shape: ClusterShape, emr: EmrSettings, dag_run_id: str, executors: ExecutorPlan
) -> dict:
    """RunJobFlow request for ``run``: Spark on ``shape``, bootstrapped with the run's code version.

    The cluster waits for steps (they are added once it exists) and terminates itself after
    ``idle_timeout_seconds`` without work, should the DAG's teardown never run. It is tagged
    with the DAG run that owns it, so that run's clusters can be found and stopped, and with
    its executor plan.
    """
    instances: dict = {
        "InstanceGroups": _instance_groups(shape),
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if emr.subnet_id:
        instances["Ec2SubnetId"] = emr.subnet_id
    tags = {
        **TAGS,
        "fruitflow-run": run.key,
        "fruitflow-code": run.code_version,
        DAG_RUN_TAG: dag_run_tag(dag_run_id),
        EXECUTORS_TAG: executors.describe(),
    }
    return {
        "Name": f"{NAME_PREFIX}{run.key}",
        "ReleaseLabel": shape.release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": emr.log_uri or join_uri(run.results_uri, "_emr_logs") + "/",
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "install fruitflow Python requirements",
                "ScriptBootstrapAction": {
                    "Path": join_uri(run.code_uri, "bootstrap.sh"),
                    "Args": [
                        run.code_uri,
                        emr.python,
                        run.engine,
                        *([emr.wheelhouse_uri] if emr.wheelhouse_uri else []),
                    ],
                },
            }
        ],
        "Configurations": _spark_configurations(emr, executors),
        "EbsRootVolumeSize": emr.root_volume_gib,
        "AutoTerminationPolicy": {"IdleTimeout": emr.idle_timeout_seconds},
        "StepConcurrencyLevel": 1,
        "ServiceRole": emr.service_role,
        "JobFlowRole": emr.instance_profile,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
    }


def live_clusters_of(emr_client, dag_run_id: str) -> list[str]:
    """Ids of the clusters not yet terminating that DAG run ``dag_run_id`` created."""
    tag = {"Key": DAG_RUN_TAG, "Value": dag_run_tag(dag_run_id)}
    pages = emr_client.get_paginator("list_clusters").paginate(ClusterStates=LIVE_STATES)
    candidates = [c["Id"] for page in pages for c in page["Clusters"] if c["Name"].startswith(NAME_PREFIX)]
    return [
        cluster_id
        for cluster_id in candidates
        if tag in emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"].get("Tags", [])
    ]


def terminate_clusters_of(emr_client, dag_run_id: str) -> list[str]:
    """Terminate every live cluster of DAG run ``dag_run_id``; returns their ids."""
    cluster_ids = live_clusters_of(emr_client, dag_run_id)
    if cluster_ids:
        emr_client.terminate_job_flows(JobFlowIds=cluster_ids)
    return cluster_ids
