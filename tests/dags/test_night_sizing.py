"""A cluster sized to the night: how many core nodes plan_cluster chooses for the images a night
computes, what the RunJobFlow request then asks for, and the settings and form field that steer it.
Pure planning: nothing is sent to AWS, no DAG runs."""

from __future__ import annotations

import json
import re

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from fruitflow.contract import ENGINE_ONNX, ENGINE_TENSORFLOW
from fruitflow_pipeline.cluster import job_flow_spec
from fruitflow_pipeline.nightly import ToFeaturize
from fruitflow_pipeline.params import ClusterSize, dag_params, plan_cluster
from fruitflow_pipeline.plan import trigger_params
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import SettingError, Settings
from fruitflow_pipeline.sizing import SizingError, featurize_minutes

# Three core types a fleet may get; m5.2xlarge has the fewest vCPUs and the least YARN memory per executor.
FLEETS = {"primary": ["m5.xlarge"], "core": ["m5.2xlarge", "r5.2xlarge", "m5.4xlarge"]}


def night(images: int) -> ToFeaturize:
    return ToFeaturize(images=images, why=f"{images} images new or changed")


RUN = PipelineRun(
    key="20261206T020000Z",
    images_uri="s3://fruitflow-data/images",
    results_uri="s3://fruitflow-data/results",
    code_version="c0de",
    variance=0.95,
    weights="imagenet",
    batch_size=16,
    max_error_share=0.05,
    engine=ENGINE_ONNX,
)  # a run of the form's default params


def settings_with(**env: str) -> Settings:
    return Settings.from_env({f"FRUITFLOW_{name.upper()}": value for name, value in env.items()})


def planned(images: int, conf: dict | None = None, **env: str):
    """The cluster a night of ``images`` gets with the form's defaults, ``conf`` and FRUITFLOW_``env``."""
    settings = settings_with(**env)
    return plan_cluster(trigger_params(settings, conf or {}), settings, night(images))


def request_for(cluster, **env: str) -> dict:
    """The RunJobFlow request of ``cluster`` for RUN."""
    return job_flow_spec(cluster.sized(RUN), cluster.shape, settings_with(**env).emr, "manual__x", cluster.executors)


def test_a_small_night_gets_a_single_node_of_the_core_type_and_no_core_group():
    cluster = planned(900)

    assert (cluster.size.core_nodes, cluster.size.chosen, cluster.size.images) == (0, "sized", 900)
    assert cluster.size.planned_minutes <= cluster.size.target_minutes == 30
    assert cluster.executors.nodes == 1 and cluster.size.task_slots == cluster.executors.task_slots == 4
    groups = request_for(cluster)["Instances"]["InstanceGroups"]
    assert [(group["InstanceRole"], group["InstanceType"], group["InstanceCount"]) for group in groups] == [
        ("MASTER", "m5.2xlarge", 1)
    ]
    assert cluster.size.why.startswith("a single-node cluster: 900 images take 0.1 min on 4 task slots")


def test_a_big_night_gets_the_fewest_core_nodes_within_the_target():
    images = 5_000_000
    cluster = planned(images)
    nodes, slots = cluster.size.core_nodes, cluster.size.task_slots

    assert cluster.size.chosen == "sized" and nodes > 1
    assert featurize_minutes(images, slots, ENGINE_ONNX) <= 30
    one_fewer = planned(images, {"core_instance_count": nodes - 1})
    assert featurize_minutes(images, one_fewer.size.task_slots, ENGINE_ONNX) > 30
    assert cluster.size.planned_minutes == round(featurize_minutes(images, slots, ENGINE_ONNX), 1)
    groups = {group["InstanceRole"]: group for group in request_for(cluster)["Instances"]["InstanceGroups"]}
    assert (groups["MASTER"]["InstanceType"], groups["CORE"]["InstanceType"]) == ("m5.xlarge", "m5.2xlarge")
    assert groups["CORE"]["InstanceCount"] == nodes
    assert f"the fewest nodes within the 30 min target ({nodes - 1} core nodes: " in cluster.size.why


def test_a_night_too_big_for_the_most_core_nodes_gets_the_most_and_says_it_is_over_the_target():
    cluster = planned(5_000_000, emr_max_core_nodes="3")

    assert (cluster.size.core_nodes, cluster.size.chosen) == (3, "sized")
    assert cluster.size.planned_minutes > cluster.size.target_minutes == 30
    assert "over the 30 min target on the most FRUITFLOW_EMR_MAX_CORE_NODES allows" in cluster.size.why
    assert cluster.shape.core_instance_count == 3


@pytest.mark.parametrize("count", [3, 20])  # 20: over FRUITFLOW_EMR_MAX_CORE_NODES (10), within the form's 50
def test_a_core_count_in_the_trigger_wins_whatever_the_night(count):
    cluster = planned(900, {"core_instance_count": count})

    assert (cluster.size.core_nodes, cluster.size.chosen, cluster.shape.core_instance_count) == (
        count,
        "explicit",
        count,
    )
    assert cluster.executors.nodes == count
    assert "the count the trigger asked for (core_instance_count)" in cluster.size.why


def test_an_explicit_zero_is_a_single_node_even_for_a_night_over_the_target():
    cluster = planned(5_000_000, {"core_instance_count": 0})

    assert (cluster.size.core_nodes, cluster.size.chosen) == (0, "explicit")
    assert cluster.size.planned_minutes > cluster.size.target_minutes
    assert [group["InstanceRole"] for group in request_for(cluster)["Instances"]["InstanceGroups"]] == ["MASTER"]


def test_an_explicit_zero_with_task_nodes_is_refused():
    with pytest.raises(SizingError, match=re.escape("task nodes need core nodes")):
        planned(900, {"core_instance_count": 0, "task_instance_count": 2})


def test_a_sized_night_with_task_nodes_gets_at_least_one_core_node():
    cluster = planned(900, {"task_instance_count": 2})

    assert (cluster.size.core_nodes, cluster.size.chosen) == (1, "sized")
    # m5.2xlarge core and task nodes: 2 executors of 4 cores each, on 1 + 2 nodes
    assert (cluster.executors.nodes, cluster.size.task_slots) == (3, 24)
    roles = [group["InstanceRole"] for group in request_for(cluster)["Instances"]["InstanceGroups"]]
    assert roles == ["MASTER", "CORE", "TASK"]


def test_a_four_vcpu_core_type_is_never_a_single_node():
    sized = planned(900, {"core_instance_type": "m5.xlarge"})
    assert (sized.size.core_nodes, sized.size.chosen, sized.size.task_slots) == (1, "sized", 4)

    with pytest.raises(SizingError, match=re.escape("m5.xlarge has room for one executor")):
        planned(900, {"core_instance_type": "m5.xlarge", "core_instance_count": 0})


def test_the_target_minutes_setting_changes_the_choice():
    # a single node's 4 slots take 17.7 min for 200,000 images; one core node's 8 take half that
    assert planned(200_000).size.core_nodes == 0
    tighter = planned(200_000, emr_target_minutes="15")
    assert (tighter.size.core_nodes, tighter.size.target_minutes) == (1, 15)
    assert tighter.size.planned_minutes <= 15


def test_a_slower_engine_gets_more_nodes_for_the_same_images():
    onnx = planned(900_000)
    tensorflow = planned(900_000, {"engine": ENGINE_TENSORFLOW})

    assert (onnx.size.core_nodes, onnx.size.planned_minutes) == (2, 20.0)
    assert tensorflow.size.core_nodes > onnx.size.core_nodes
    assert featurize_minutes(900_000, tensorflow.size.task_slots, ENGINE_TENSORFLOW) <= 30
    assert tensorflow.size.images_per_slot_second < onnx.size.images_per_slot_second
    assert "tensorflow planned at 25.4 images/s per slot" in tensorflow.size.why


def test_a_single_node_on_fleets_has_only_a_primary_fleet_of_the_core_types_sized_for_the_smallest():
    env = {"emr_fleets": json.dumps(FLEETS)}
    cluster = planned(900, **env)

    assert cluster.size.core_nodes == 0
    fleets = request_for(cluster, **env)["Instances"]["InstanceFleets"]
    assert [fleet["InstanceFleetType"] for fleet in fleets] == ["MASTER"]
    assert [config["InstanceType"] for config in fleets[0]["InstanceTypeConfigs"]] == FLEETS["core"]
    assert fleets[0]["TargetOnDemandCapacity"] == 1
    # what a single m5.2xlarge holds (the fewest vCPUs, the least YARN memory per executor), whichever type EMR picks
    assert cluster.executors == planned(900).executors
    assert cluster.executors != planned(900, {"core_instance_type": "r5.2xlarge"}).executors


def test_the_cluster_size_round_trips_through_its_dict():
    size = planned(900_000).size

    assert ClusterSize(**json.loads(json.dumps(size.to_dict()))) == size
    assert ClusterSize.from_json(size.to_json()) == size


def test_a_sized_run_has_the_partitions_of_its_executors():
    cluster = planned(900_000)

    sized = cluster.sized(RUN)
    assert sized.partitions == cluster.executors.partitions == cluster.size.task_slots * 4
    assert sized.executor_plan == cluster.executors.describe()


def test_the_sizing_settings_are_read():
    emr = Settings.from_env({"FRUITFLOW_EMR_TARGET_MINUTES": "45", "FRUITFLOW_EMR_MAX_CORE_NODES": "50"}).emr
    assert (emr.target_minutes, emr.max_core_nodes) == (45, 50)
    defaults = Settings.from_env({}).emr
    assert (defaults.target_minutes, defaults.max_core_nodes) == (30, 10)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FRUITFLOW_EMR_TARGET_MINUTES", "0", "FRUITFLOW_EMR_TARGET_MINUTES='0' must be positive"),
        ("FRUITFLOW_EMR_TARGET_MINUTES", "x", "FRUITFLOW_EMR_TARGET_MINUTES='x' is not a number"),
        ("FRUITFLOW_EMR_MAX_CORE_NODES", "0", "FRUITFLOW_EMR_MAX_CORE_NODES='0' must be positive"),
        ("FRUITFLOW_EMR_MAX_CORE_NODES", "x", "FRUITFLOW_EMR_MAX_CORE_NODES='x' is not a number"),
        ("FRUITFLOW_EMR_MAX_CORE_NODES", "51", "FRUITFLOW_EMR_MAX_CORE_NODES=51 is over the form's 50"),
    ],
)
def test_bad_sizing_settings_are_refused_naming_the_variable(variable, value, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        Settings.from_env({variable: value})


def validated_core_count(conf: dict):
    params = ParamsDict(dag_params(Settings.from_env({})))
    params.update(conf)
    return params.validate()["core_instance_count"]


@pytest.mark.parametrize(
    ("conf", "count"), [({}, None), ({"core_instance_count": None}, None), ({"core_instance_count": 0}, 0)]
)
def test_the_form_takes_an_empty_core_count_or_zero(conf, count):
    assert validated_core_count(conf) == count


@pytest.mark.parametrize("count", [-1, 51])
def test_the_form_refuses_a_core_count_out_of_range(count):
    with pytest.raises(ParamValidationError, match="core_instance_count"):
        validated_core_count({"core_instance_count": count})


def test_bf16_is_planned_at_openvinos_f32_rate_since_no_sized_type_has_bf16():
    from fruitflow_pipeline.sizing import planned_rate

    assert planned_rate("openvino-bf16") == planned_rate("openvino") < planned_rate("onnx")
