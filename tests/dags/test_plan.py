"""The plan command: what a run would do, from the settings and a conf, without AWS."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.sdk.exceptions import ParamValidationError

from fruitflow_pipeline.params import InvalidParams
from fruitflow_pipeline.plan import main, render_plan
from fruitflow_pipeline.settings import Settings
from fruitflow_pipeline.steps import PIPELINE

ROOT = Path(__file__).resolve().parents[2]
MOMENT = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def request_in(plan: str) -> dict:
    return json.loads(plan.split("RunJobFlow request:\n", 1)[1])


def step_lines(plan: str) -> list[list[str]]:
    lines = (shlex.split(line) for line in plan.splitlines() if line.startswith("  "))
    return [line for line in lines if line[0].endswith("spark-submit")]


def test_default_plan_shows_executors_steps_and_the_request_for_the_nightly_run():
    plan = render_plan(Settings.from_env({}), {}, MOMENT)
    assert "run 20261126T020000Z" in plan
    # The request is for a full refresh of 90,000 images: a single m5.2xlarge node fits the 30 min target.
    assert "For a full refresh of 90,000 images" in plan
    assert (
        "Executors: 1 node x 1 executor x 4 cores = 4 task slots with 2.6 GB Python memory and 9.4 GB heap "
        "per executor" in plan
    )
    assert "Featurize tasks: 16" in plan
    steps = step_lines(plan)
    assert [Path(line[5]).name for line in steps] == [step.script for step in PIPELINE]
    assert steps[0][:3] == ["spark-submit", "--deploy-mode", "client"]
    assert steps[0][steps[0].index("--partitions") + 1] == "16"
    request = request_in(plan)
    assert request["Name"] == "fruitflow-20261126T020000Z"
    assert request["EbsRootVolumeSize"] == 30
    groups = request["Instances"]["InstanceGroups"]
    assert [(group["InstanceRole"], group["InstanceType"], group["InstanceCount"]) for group in groups] == [
        ("MASTER", "m5.2xlarge", 1)  # a single node, of the core type: it runs the executors
    ]
    assert "Ec2SubnetId" not in request["Instances"]
    assert plan.count("Warning: ") == 3  # no subnet, no wheelhouse, weights from the internet


def test_the_plan_shows_the_cluster_each_size_of_night_gets():
    plan = render_plan(Settings.from_env({}), {}, MOMENT)
    nights = plan.split("Cluster by night (FRUITFLOW_EMR_TARGET_MINUTES=30, FRUITFLOW_EMR_MAX_CORE_NODES=10):\n")[1]
    lines = nights.split("\n\n")[0].splitlines()
    assert lines[0].startswith("  1 % of 90,000 images changed: a single-node cluster: 900 images take 0.1 min")
    assert lines[1].startswith("  a full refresh of 90,000 images: a single-node cluster: 90,000 images take 8.0 min")
    assert lines[2].startswith(
        "  a full refresh of 900,000 images: 2 core nodes: 900,000 images take 20.0 min on 16 task slots, "
        "the fewest nodes within the 30 min target (1 core node: 39.9 min)"
    )
    assert all(line.endswith("onnx planned at 46.95 images/s per slot") for line in lines)
    tight = render_plan(Settings.from_env({"FRUITFLOW_EMR_MAX_CORE_NODES": "1"}), {}, MOMENT)
    assert "900,000 images take 39.9 min on 8 task slots, over the 30 min target on the most" in tight


def test_plan_follows_the_conf_and_a_deployment_that_needs_no_internet():
    settings = Settings.from_env(
        {
            "FRUITFLOW_EMR_SUBNET_ID": "subnet-0abc",
            "FRUITFLOW_EMR_WHEELHOUSE_URI": "s3://fruits/wheelhouse",
            "FRUITFLOW_WEIGHTS": "s3://fruits/models/mobilenet_v2.h5",
        }
    )
    plan = render_plan(settings, {"core_instance_count": 4, "variance": 0.9}, MOMENT)
    assert "Executors: 4 nodes x 2 executors x 4 cores = 32 task slots" in plan
    assert "Warning" not in plan
    pca = step_lines(plan)[1]
    assert pca[pca.index("--variance") + 1] == "0.9"
    request = request_in(plan)
    assert request["Instances"]["Ec2SubnetId"] == "subnet-0abc"
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"][-1] == "s3://fruits/wheelhouse"


def test_plan_shows_a_fleet_request_in_several_subnets_sized_for_its_tightest_type():
    fleets = {"primary": ["m5.xlarge"], "core": ["m5.2xlarge", "c5.2xlarge"], "task": ["m5.2xlarge"]}
    settings = Settings.from_env(
        {"FRUITFLOW_EMR_FLEETS": json.dumps(fleets), "FRUITFLOW_EMR_SUBNET_IDS": "subnet-0a1b2c3d,subnet-4e5f6a7b"}
    )
    plan = render_plan(settings, {"core_instance_count": 2, "task_instance_count": 1, "batch_size": 16}, MOMENT)
    assert "Executors: 6 executors x 4 cores on instance fleets = 24 task slots" in plan
    assert (
        "\n".join(
            [
                "Capacity: instance fleets (units: vCPUs)",
                "Subnets: subnet-0a1b2c3d, subnet-4e5f6a7b",
                "  primary fleet: 1 ON_DEMAND units of m5.xlarge (1)",
                "  core fleet: 16 ON_DEMAND units of m5.2xlarge (8), c5.2xlarge (8)",
                "  task fleet: 8 SPOT units of m5.2xlarge (8); on demand after 10 min without spot",
            ]
        )
        in plan
    )
    instances = request_in(plan)["Instances"]
    assert [fleet["InstanceFleetType"] for fleet in instances["InstanceFleets"]] == ["MASTER", "CORE", "TASK"]
    assert instances["Ec2SubnetIds"] == ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
    defaults = next(c for c in request_in(plan)["Configurations"] if c["Classification"] == "spark-defaults")
    # c5.2xlarge: 12288 MB of YARN memory for 8 vCPUs, so 6144 MB per 4-core executor on every type.
    heap, overhead = (int(defaults["Properties"][f"spark.executor.{key}"][:-1]) for key in ("memory", "memoryOverhead"))
    assert heap + overhead == 6144


def test_local_plan_lists_the_spark_submit_commands():
    plan = render_plan(Settings.from_env({"FRUITFLOW_TARGET": "local"}), {}, MOMENT)
    assert "RunJobFlow" not in plan and "Executors" not in plan
    assert [Path(line[line.index("--py-files") + 2]).name for line in step_lines(plan)] == [
        step.script for step in PIPELINE
    ]


def test_plan_refuses_what_a_trigger_would_refuse():
    with pytest.raises(ParamValidationError, match="core_instance_count"):
        render_plan(Settings.from_env({}), {"core_instance_count": -1}, MOMENT)
    with pytest.raises(InvalidParams, match="task nodes need core nodes"):
        render_plan(Settings.from_env({}), {"core_instance_count": 0, "task_instance_count": 2}, MOMENT)


def test_plan_command_as_a_user_runs_it(capsys):
    result = subprocess.run(
        [sys.executable, "-m", "fruitflow_pipeline.plan", "--conf", '{"task_instance_count": 2}', "--images", "9000"],
        cwd=ROOT, env={**os.environ, "FRUITFLOW_TARGET": "emr"},  # as `make plan`: the package is installed
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Task nodes need a core node, and one with the task nodes holds a night of 9,000 images.
    assert "For a night of 9,000 images" in result.stdout
    assert "3 nodes x 2 executors x 4 cores = 24 task slots" in result.stdout
    assert main(["--conf", '{"core_instance_type": "c5.4xlarge", "batch_size": 64, "colour": "red"}']) == 2
    error = capsys.readouterr().err
    assert "would be refused: conf: unknown key(s) colour" in error and "c5.4xlarge has 1536 MB" in error
    with pytest.raises(SystemExit):
        main(["--conf", "{core: 4}"])
    assert "--conf is not JSON" in capsys.readouterr().err


def test_plan_shows_the_guard_rails_and_the_request_carries_them():
    step_role = "arn:aws:iam::123456789012:role/fruitflow-steps"
    settings = Settings.from_env(
        {
            "FRUITFLOW_EMR_SECURITY_CONFIGURATION": "imdsv2-and-encryption",
            "FRUITFLOW_EMR_STEP_ROLE": step_role,
            "FRUITFLOW_EMR_TAGS": '{"cost-center": "ml-42", "project": "someone-else"}',
        }
    )
    plan = render_plan(settings, {}, MOMENT)
    assert "Security configuration: imdsv2-and-encryption" in plan
    assert f"Steps' runtime role: {step_role}" in plan
    assert 'Deployment tags: {"cost-center": "ml-42", "project": "someone-else"}' in plan
    assert "Warning: FRUITFLOW_EMR_TAGS sets project, which the run's own tags replace" in plan
    request = request_in(plan)
    assert request["SecurityConfiguration"] == "imdsv2-and-encryption"
    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    assert (tags["cost-center"], tags["project"]) == ("ml-42", "fruitflow")


def test_the_default_plan_says_there_are_no_guard_rails():
    plan = render_plan(Settings.from_env({}), {}, MOMENT)
    assert "Security configuration: none (FRUITFLOW_EMR_SECURITY_CONFIGURATION)" in plan
    assert "Steps' runtime role: none, they run as the instance profile (FRUITFLOW_EMR_STEP_ROLE)" in plan
    assert "SecurityConfiguration" not in request_in(plan)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITFLOW_EMR_STEP_ROLE": "fruitflow-steps", "FRUITFLOW_EMR_SECURITY_CONFIGURATION": "sc"},
         "FRUITFLOW_EMR_STEP_ROLE='fruitflow-steps' must be an IAM role ARN"),
        ({"FRUITFLOW_EMR_STEP_ROLE": "arn:aws:iam::123456789012:role/steps"},
         "needs FRUITFLOW_EMR_SECURITY_CONFIGURATION"),
        ({"FRUITFLOW_EMR_TAGS": '["cost-center"]'}, "FRUITFLOW_EMR_TAGS must be a JSON object of tag key"),
        ({"FRUITFLOW_EMR_TAGS": '{"team": 7}'}, "FRUITFLOW_EMR_TAGS must be a JSON object of tag key"),
        ({"FRUITFLOW_EMR_TAGS": '{"aws:owner": "x"}'}, "tag key 'aws:owner' must be 1 to 128 characters"),
        ({"FRUITFLOW_EMR_TAGS": json.dumps({"team": "x" * 257})}, "the value of 'team' is over 256 characters"),
    ],
)  # fmt: skip
def test_guard_rail_settings_that_emr_would_refuse_are_refused_with_the_reason(env, message):
    from fruitflow_pipeline.settings import SettingError

    with pytest.raises(SettingError, match=re.escape(message)):
        Settings.from_env(env)
