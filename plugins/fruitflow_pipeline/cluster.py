"""The transient EMR cluster: one function builds the whole RunJobFlow request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from fruitflow_pipeline.run import PipelineRun, join_uri
from fruitflow_pipeline.settings import EmrSettings
from fruitflow_pipeline.sizing import (
    INSTANCE_TYPES,
    ExecutorPlan,
    SizingError,
    plan_executors,
    plan_fleet_executors,
    plan_single_node_executors,
)

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
    core_instance_count: int  # 0: a single-node cluster, whose primary runs the executors
    task_instance_type: str
    task_instance_count: int
    task_market: str  # "SPOT" or "ON_DEMAND"
    # Instance fleets (FRUITFLOW_EMR_FLEETS), role -> instance types; empty: instance groups. With fleets,
    # a role's capacity is its count times the vCPUs of its instance type above, filled by any of these types.
    fleets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _instance_groups(shape: ClusterShape) -> list[dict]:
    groups = [
        {"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
         "InstanceType": shape.primary_instance_type, "InstanceCount": 1},
    ]  # fmt: skip
    if shape.core_instance_count:
        groups.append(
            {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
             "InstanceType": shape.core_instance_type, "InstanceCount": shape.core_instance_count}
        )  # fmt: skip
    if shape.task_instance_count:
        groups.append(
            {"Name": "task", "InstanceRole": "TASK", "Market": shape.task_market,
             "InstanceType": shape.task_instance_type, "InstanceCount": shape.task_instance_count}
        )  # fmt: skip
    return groups


# How long the task fleet waits for spot capacity before it takes on-demand instances instead.
SPOT_TIMEOUT_MINUTES = 10


def fleet_capacity(shape: ClusterShape) -> dict[str, int]:
    """The worker fleets' target capacity in vCPUs: each role's count times its instance type's vCPUs."""
    roles = {}
    if shape.core_instance_count:
        roles["core"] = (shape.core_instance_type, shape.core_instance_count)
    if shape.task_instance_count:
        roles["task"] = (shape.task_instance_type, shape.task_instance_count)
    unknown = sorted({instance_type for instance_type, _ in roles.values()} - set(INSTANCE_TYPES))
    if unknown:
        raise SizingError(f"no vCPU count known for {', '.join(unknown)}; supported types: {', '.join(INSTANCE_TYPES)}")
    if "task" in roles and "task" not in shape.fleets:
        raise SizingError("task nodes asked for, but FRUITFLOW_EMR_FLEETS names no task instance types")
    return {role: count * INSTANCE_TYPES[instance_type].vcpus for role, (instance_type, count) in roles.items()}


def _instance_fleets(shape: ClusterShape) -> list[dict]:
    """One fleet per role, every type weighted by its vCPUs (the primary fleet's weights are 1: EMR API
    Reference, InstanceTypeConfig).
    Primary and core are on demand; task capacity is spot with a timeout that switches to on-demand.
    Allocation strategies: EMR API Reference, SpotProvisioningSpecification (price-capacity-optimized
    among capacity-optimized, lowest-price, diversified, capacity-optimized-prioritized) and
    OnDemandProvisioningSpecification (lowest-price or prioritized)."""
    on_demand = {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    capacity = fleet_capacity(shape)
    fleets = [
        {"Name": "primary", "InstanceFleetType": "MASTER", "TargetOnDemandCapacity": 1,
         "InstanceTypeConfigs": [{"InstanceType": name, "WeightedCapacity": 1} for name in shape.fleets["primary"]],
         "LaunchSpecifications": on_demand},
    ]  # fmt: skip
    if "core" in capacity:
        fleets.append(
            {"Name": "core", "InstanceFleetType": "CORE", "TargetOnDemandCapacity": capacity["core"],
             "InstanceTypeConfigs": _weighted_by_vcpus(shape.fleets["core"]), "LaunchSpecifications": on_demand}
        )  # fmt: skip
    if "task" in capacity:
        spot = shape.task_market == "SPOT"
        fleets.append(
            {"Name": "task", "InstanceFleetType": "TASK",
             ("TargetSpotCapacity" if spot else "TargetOnDemandCapacity"): capacity["task"],
             "InstanceTypeConfigs": _weighted_by_vcpus(shape.fleets["task"]),
             "LaunchSpecifications": {
                 **on_demand,
                 **({"SpotSpecification": {
                     "TimeoutDurationMinutes": SPOT_TIMEOUT_MINUTES, "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                     "AllocationStrategy": "price-capacity-optimized"}} if spot else {}),
             }}
        )  # fmt: skip
    return fleets


def _weighted_by_vcpus(instance_types: tuple[str, ...]) -> list[dict]:
    return [{"InstanceType": name, "WeightedCapacity": INSTANCE_TYPES[name].vcpus} for name in instance_types]


def plan_cluster_executors(shape: ClusterShape, worker_mb: int) -> ExecutorPlan:
    """The executor plan for ``shape``: its core and task groups, or, with instance fleets, the
    smallest YARN memory per vCPU among every type the worker fleets may get; on a single-node
    cluster, its primary's. Raises SizingError."""
    if not shape.core_instance_count:
        return plan_single_node_executors(list(shape.fleets.get("primary", [shape.primary_instance_type])), worker_mb)
    if not shape.fleets:
        return plan_executors(worker_groups(shape), worker_mb)
    capacity = fleet_capacity(shape)
    types = [name for role in capacity for name in shape.fleets[role]]
    return plan_fleet_executors(types, sum(capacity.values()), worker_mb)


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
        **(
            {"InstanceFleets": _instance_fleets(shape)} if shape.fleets else {"InstanceGroups": _instance_groups(shape)}
        ),
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if shape.fleets and emr.subnet_ids:
        instances["Ec2SubnetIds"] = list(emr.subnet_ids)  # EMR launches the cluster in the best of these
    elif emr.subnet_ids:
        instances["Ec2SubnetId"] = emr.subnet_ids[0]
    tags = {
        **emr.tags,  # the deployment's own tags first: the run's below replace any with the same key
        **TAGS,
        "fruitflow-run": run.key,
        "fruitflow-code": run.code_version,
        DAG_RUN_TAG: dag_run_tag(dag_run_id),
        EXECUTORS_TAG: executors.describe(),
    }
    spec = {
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
    if emr.security_configuration:
        spec["SecurityConfiguration"] = emr.security_configuration
    return spec


def _clusters_tagged_with(emr_client, dag_run_id: str, **filters) -> list[str]:
    """Ids of the clusters of ListClusters(``filters``) that DAG run ``dag_run_id`` created, oldest first."""
    tag = {"Key": DAG_RUN_TAG, "Value": dag_run_tag(dag_run_id)}
    pages = emr_client.get_paginator("list_clusters").paginate(**filters)
    candidates = [c for page in pages for c in page["Clusters"] if c["Name"].startswith(NAME_PREFIX)]
    candidates.sort(key=lambda c: c["Status"]["Timeline"]["CreationDateTime"])
    return [
        c["Id"] for c in candidates if tag in emr_client.describe_cluster(ClusterId=c["Id"])["Cluster"].get("Tags", [])
    ]


def live_clusters_of(emr_client, dag_run_id: str) -> list[str]:
    """Ids of the clusters not yet terminating that DAG run ``dag_run_id`` created."""
    return _clusters_tagged_with(emr_client, dag_run_id, ClusterStates=LIVE_STATES)


def clusters_of_run(emr_client, dag_run_id: str, created_after: datetime) -> list[str]:
    """Ids of every cluster, live or ended, that DAG run ``dag_run_id`` created after ``created_after``,
    oldest first: replacements of failed launches and a retried create's first cluster included."""
    return _clusters_tagged_with(emr_client, dag_run_id, CreatedAfter=created_after)


def terminate_clusters_of(emr_client, dag_run_id: str) -> list[str]:
    """Terminate every live cluster of DAG run ``dag_run_id``; returns their ids."""
    cluster_ids = live_clusters_of(emr_client, dag_run_id)
    if cluster_ids:
        emr_client.terminate_job_flows(JobFlowIds=cluster_ids)
    return cluster_ids
