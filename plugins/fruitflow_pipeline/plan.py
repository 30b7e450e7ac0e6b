"""What a run would do, read before paying for it; nothing is sent to AWS.

    python -m fruitflow_pipeline.plan [--conf '{"core_instance_count": 4}'] [--images N]
    (or: make plan CONF='...' IMAGES=N)

Takes the deployment settings (FRUITFLOW_*) and the params as a trigger would (the form's
defaults, then the conf, checked against the same schema and rules as validate_params) and
prints each step's command line and, on EMR, the cluster each size of night gets and the whole
RunJobFlow request for a night that featurises N images (the images are not listed: that needs AWS).
What needs AWS is not checked: that the images exist and the weights file is there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime

from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from fruitflow.contract import WEIGHTS_IMAGENET
from fruitflow_pipeline.cluster import job_flow_spec
from fruitflow_pipeline.code_bundle import code_version
from fruitflow_pipeline.nightly import ToFeaturize
from fruitflow_pipeline.params import (
    InvalidParams,
    anywhere_warning,
    dag_params,
    plan_cluster,
    plan_run,
)
from fruitflow_pipeline.run import PipelineRun, run_key
from fruitflow_pipeline.settings import SettingError, Settings, Target
from fruitflow_pipeline.steps import PIPELINE, emr_step, local_command


def deployment_warnings(settings: Settings, weights: str) -> list[str]:
    """What an EMR run with these settings needs from its account and network beyond S3."""
    warnings = []
    if not settings.emr.subnet_ids:
        warnings.append(
            "no subnet (FRUITFLOW_EMR_SUBNET_ID or _IDS): EMR picks the account's default VPC, and fails where there "
            "is none"
        )
    if not settings.emr.wheelhouse_uri:
        warnings.append("no wheelhouse (FRUITFLOW_EMR_WHEELHOUSE_URI): every node installs from PyPI")
    if weights == WEIGHTS_IMAGENET:
        warnings.append("weights 'imagenet': the Spark driver downloads them from the internet (FRUITFLOW_WEIGHTS)")
    return warnings


def capacity_lines(request: dict) -> list[str]:
    """What the cluster asks EC2 for: one line per instance group, or per instance fleet with its types."""
    instances = request["Instances"]
    subnets = instances.get("Ec2SubnetIds") or [instances.get("Ec2SubnetId", "the default VPC's")]
    lines = [f"Subnets: {', '.join(subnets)}"]
    for group in instances.get("InstanceGroups", []):
        lines.append(f"  {group['Name']}: {group['InstanceCount']} x {group['InstanceType']} {group['Market']}")
    for fleet in instances.get("InstanceFleets", []):
        targets = [
            f"{fleet[key]} {market}"
            for key, market in (("TargetOnDemandCapacity", "ON_DEMAND"), ("TargetSpotCapacity", "SPOT"))
            if key in fleet
        ]
        types = ", ".join(
            f"{config['InstanceType']} ({config['WeightedCapacity']})" for config in fleet["InstanceTypeConfigs"]
        )
        spot = fleet["LaunchSpecifications"].get("SpotSpecification")
        fallback = f"; on demand after {spot['TimeoutDurationMinutes']} min without spot" if spot else ""
        lines.append(f"  {fleet['Name']} fleet: {' + '.join(targets)} units of {types}{fallback}")
    kind = "instance fleets (units: vCPUs)" if "InstanceFleets" in instances else "instance groups"
    return [f"Capacity: {kind}", *lines]


def guard_rail_lines(settings: Settings, request: dict) -> list[str]:
    """The account's guard rails as this deployment meets them: security configuration, the steps'
    runtime role, and the deployment's tags, with any the run's own tags replaced."""
    emr, tags = settings.emr, {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    lines = [
        f"Security configuration: {emr.security_configuration or 'none (FRUITFLOW_EMR_SECURITY_CONFIGURATION)'}",
        f"Steps' runtime role: {emr.step_role or 'none, they run as the instance profile (FRUITFLOW_EMR_STEP_ROLE)'}",
        f"Deployment tags: {json.dumps(dict(emr.tags)) if emr.tags else 'none (FRUITFLOW_EMR_TAGS)'}",
    ]
    replaced = sorted(key for key, value in emr.tags.items() if tags[key] != value)
    if replaced:
        lines.append(f"Warning: FRUITFLOW_EMR_TAGS sets {', '.join(replaced)}, which the run's own tags replace")
    return lines


# Nights whose cluster every EMR plan shows: about Fruits-360's size, 1 % of it changed, and ten times it.
EXAMPLE_NIGHTS = (
    ToFeaturize(images=900, why="1 % of 90,000 images changed"),
    ToFeaturize(images=90_000, why="a full refresh of 90,000 images"),
    ToFeaturize(images=900_000, why="a full refresh of 900,000 images"),
)


def trigger_params(settings: Settings, conf: dict) -> dict:
    """The params a trigger with ``conf`` gets, checked by the trigger form's schema; raises
    ParamValidationError where the form would refuse them."""
    params = ParamsDict(dag_params(settings))
    params.update(conf)
    return params.validate()


def plan_for_conf(settings: Settings, conf: dict, moment: datetime) -> PipelineRun:
    """The run a trigger with ``conf`` would plan, checked by the trigger form's schema and
    validate_params' rules; raises InvalidParams or ParamValidationError where a trigger would be refused."""
    params = trigger_params(settings, conf)
    return plan_run(params, conf, settings, code_version(settings.jobs_dir), run_key(moment))


def cluster_size_lines(settings: Settings, params: dict, nights: tuple[ToFeaturize, ...]) -> list[str]:
    """The cluster each of ``nights`` gets, one line each."""
    emr = settings.emr
    lines = [
        f"Cluster by night (FRUITFLOW_EMR_TARGET_MINUTES={emr.target_minutes}, "
        f"FRUITFLOW_EMR_MAX_CORE_NODES={emr.max_core_nodes}):"
    ]
    for night in nights:
        size = plan_cluster(params, settings, night).size
        lines.append(f"  {night.why}: {size.why}")
    return lines


def conf_from_json(text: str) -> dict:
    """A trigger's conf given as JSON text; ValueError saying what is wrong with it."""
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as problem:
        raise ValueError(f"is not JSON: {problem}") from None
    if not isinstance(conf, dict):
        raise ValueError("must be a JSON object of params, such as '{\"max_error_share\": 0.2}'")
    return conf


def render_plan(settings: Settings, conf: dict, moment: datetime, images: int | None = None) -> str:
    """The plan as text, the request for a night that featurises ``images`` (default: the largest
    example night); raises InvalidParams or ParamValidationError for a conf a trigger would refuse."""
    params = trigger_params(settings, conf)
    run = plan_run(params, conf, settings, code_version(settings.jobs_dir), run_key(moment))
    lines = [
        f"fruitflow plan: target {settings.target.value}, run {run.key}, code version {run.code_version}",
        "(nothing was sent to AWS; not checked: that the images and the weights file exist)",
        "",
        f"Outputs: {run.uri}/",
    ]
    if warning := anywhere_warning(settings):
        lines.append(f"Warning: {warning}")
    if settings.target is Target.EMR:
        night = EXAMPLE_NIGHTS[1] if images is None else ToFeaturize(images=images, why=f"a night of {images:,} images")
        nights = EXAMPLE_NIGHTS if images is None else (*EXAMPLE_NIGHTS, night)
        cluster = plan_cluster(params, settings, night)
        run = cluster.sized(run)
        lines += [f"Warning: {warning}" for warning in deployment_warnings(settings, run.weights)]
        lines += ["", *cluster_size_lines(settings, params, nights), ""]
        lines += [
            f"For {night.why} (another count: --images N, or make plan TO_FEATURIZE=N):",
            f"  Executors: {cluster.executors.describe()}",
            f"  Featurize tasks: {run.partitions}",
        ]
        lines.append("")
        lines.append("Steps (spark-submit on the primary node, one after the other):")
        lines += [f"  {shlex.join(emr_step(step, run)['HadoopJarStep']['Args'])}" for step in PIPELINE]
        request = job_flow_spec(run, cluster.shape, settings.emr, f"manual__{moment.isoformat()}", cluster.executors)
        lines += ["", *capacity_lines(request), "", *guard_rail_lines(settings, request)]
        lines += ["", "RunJobFlow request:", json.dumps(request, indent=2)]
    else:
        lines += ["", "Steps (spark-submit on this machine, one after the other):"]
        lines += [f"  {shlex.join(local_command(step, run, settings.local)[0])}" for step in PIPELINE]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fruitflow_pipeline.plan", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--conf", default="{}", help="the trigger's conf, as JSON (default: {}, the nightly run)")
    parser.add_argument(
        "--images", type=int, help="EMR: the images the night featurises, for the request (default: a full refresh)"
    )
    args = parser.parse_args(argv)
    if args.images is not None and args.images < 0:
        parser.error("--images must be 0 or more")
    try:
        conf = conf_from_json(args.conf)
    except ValueError as problem:
        parser.error(f"--conf {problem}")
    try:
        print(render_plan(Settings.from_env(), conf, datetime.now(UTC), args.images))
    except (InvalidParams, ParamValidationError, SettingError) as problem:
        print(f"a run with these params would be refused: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
