"""Where an EMR cluster's time went and what it cost, read from EMR after the run.

EMR's API gives each cluster and each instance a timeline: created, ready (bootstrapped, able
to run work) and ended (EMR API Reference, ``ClusterTimeline``, ``InstanceTimeline``), and each
step its start and end. It has no time for a bootstrap's start, so the phases are read off the
nodes: provisioning lasts until the last node was launched, bootstrap until the cluster was
ready, then the steps, then what follows the last step (the checks and the termination).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 1) if start and end else None


def phases(cluster: dict, instances: list[dict], steps: list[dict]) -> dict:
    """Seconds of each phase of the cluster's life; None for a phase it never reached or ended."""
    timeline = cluster["Status"].get("Timeline", {})
    created, ready, ended = (timeline.get(name) for name in ("CreationDateTime", "ReadyDateTime", "EndDateTime"))
    launched = [i["Status"]["Timeline"]["CreationDateTime"] for i in instances if "Timeline" in i["Status"]]
    last_launch = max(launched, default=None)
    step_times = [step["Status"].get("Timeline", {}) for step in steps]
    starts = [times["StartDateTime"] for times in step_times if "StartDateTime" in times]
    ends = [times["EndDateTime"] for times in step_times if "EndDateTime" in times]
    first_start, last_end = min(starts, default=None), max(ends, default=None)
    return {
        "provisioning": _seconds(created, last_launch),
        "bootstrap": _seconds(last_launch, ready),
        "steps": _seconds(first_start, last_end),
        "after_steps": _seconds(last_end, ended),
        "total": _seconds(created, ended),
    }


def instance_seconds(instances: Iterable[dict], cluster_end: datetime | None, now: datetime) -> dict[str, float]:
    """Seconds each ``<instance type>:<market>`` ran, from launch to its end: the cluster's end
    where EMR has not recorded the instance's, and ``now`` for a cluster still running."""
    totals: dict[str, float] = defaultdict(float)
    for instance in instances:
        timeline = instance["Status"].get("Timeline", {})
        if "CreationDateTime" not in timeline:
            continue  # requested, never launched: EC2 bills nothing
        end = timeline.get("EndDateTime") or cluster_end or now
        kind = f"{instance['InstanceType']}:{instance['Market']}"
        totals[kind] += (end - timeline["CreationDateTime"]).total_seconds()
    return {key: round(seconds, 1) for key, seconds in sorted(totals.items())}


def estimated_cost(seconds_by_kind: Mapping[str, float], hourly_prices: Mapping[str, float]) -> dict | None:
    """Instance hours at the deployment's prices (FRUITFLOW_EMR_HOURLY_PRICES: ``<type>`` for on-demand,
    ``<type>:SPOT`` for spot, EC2 + EMR per hour). None without prices; a kind without a price
    leaves the total out, naming it, rather than guessing."""
    if not hourly_prices:
        return None
    lookup = dict(hourly_prices)
    lookup |= {f"{key}:ON_DEMAND": price for key, price in hourly_prices.items() if ":" not in key}
    missing = sorted(kind for kind in seconds_by_kind if kind not in lookup)
    if missing:
        return {"total": None, "missing_prices": missing}
    by_kind = {kind: round(seconds / 3600 * lookup[kind], 4) for kind, seconds in seconds_by_kind.items()}
    return {"total": round(sum(by_kind.values()), 4), "by_kind": by_kind}


def usage_summary(
    cluster: dict, instances: list[dict], steps: list[dict], hourly_prices: Mapping[str, float], now: datetime
) -> dict:
    """The report's ``cluster`` section: state, phases, instance time, EMR's normalized hours, cost."""
    cluster_end = cluster["Status"].get("Timeline", {}).get("EndDateTime")
    seconds_by_kind = instance_seconds(instances, cluster_end, now)
    return {
        "id": cluster["Id"],
        "state": cluster["Status"]["State"],
        "state_reason_code": cluster["Status"].get("StateChangeReason", {}).get("Code"),
        "state_reason": cluster["Status"].get("StateChangeReason", {}).get("Message"),
        "phases_seconds": phases(cluster, instances, steps),
        "instance_seconds": seconds_by_kind,
        "normalized_instance_hours": cluster.get("NormalizedInstanceHours"),
        "estimated_cost": estimated_cost(seconds_by_kind, hourly_prices),
        **({} if cluster_end else {"as_of": now.isoformat(timespec="seconds")}),
    }


def read_cluster_usage(emr_client, cluster_id: str, hourly_prices: Mapping[str, float], now: datetime) -> dict:
    """``usage_summary`` of the cluster as EMR describes it now: DescribeCluster, ListInstances, ListSteps."""
    cluster = emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]

    def listed(operation: str, field: str) -> list[dict]:
        pages = emr_client.get_paginator(operation).paginate(ClusterId=cluster_id)
        return [item for page in pages for item in page[field]]

    instances, steps = listed("list_instances", "Instances"), listed("list_steps", "Steps")
    return usage_summary(cluster, instances, steps, hourly_prices, now)


def usage_lines(usage: dict) -> list[str]:
    """The task log's lines for the on-call reader."""
    known = {name: seconds for name, seconds in usage["phases_seconds"].items() if seconds is not None}
    phase_text = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in known.items())
    kinds = ", ".join(f"{kind} {seconds / 3600:.2f} h" for kind, seconds in usage["instance_seconds"].items())
    lines = [
        f"cluster {usage['id']} {usage['state']}: {phase_text or 'no timeline yet'}",
        f"instance time: {kinds or 'none'}; EMR normalized instance hours: {usage['normalized_instance_hours']}",
    ]
    cost = usage["estimated_cost"]
    if cost and cost["total"] is not None:
        lines.append(f"estimated cost: {cost['total']:.2f} (FRUITFLOW_EMR_HOURLY_PRICES)")
    elif cost:
        missing = ", ".join(cost["missing_prices"])
        lines.append(f"no cost estimate: FRUITFLOW_EMR_HOURLY_PRICES has no price for {missing}")
    return lines


def cluster_usage_for_report(emr_client, cluster_id: str, hourly_prices: Mapping[str, float], now: datetime) -> dict:
    """``read_cluster_usage``, printed for the task log; what went wrong instead, when EMR could not
    be asked (the report is still written)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        usage = read_cluster_usage(emr_client, cluster_id, hourly_prices, now)
    except (BotoCoreError, ClientError) as problem:
        print(f"cluster {cluster_id}: its timeline could not be read from EMR: {problem}")
        return {"id": cluster_id, "error": str(problem)}
    for line in usage_lines(usage):
        print(line)
    return usage


def launch_entry(usage: dict) -> dict:
    """One cluster of the report's ``clusters``: how it ended, EMR's reason, its instance time and cost."""
    if "error" in usage:
        return usage
    cost = usage["estimated_cost"]
    return {
        "id": usage["id"],
        "state": usage["state"],
        "reason_code": usage["state_reason_code"],
        "reason": usage["state_reason"],
        "instance_seconds": usage["instance_seconds"],
        "estimated_cost": cost["total"] if cost else None,
    }


def run_clusters_for_report(
    emr_client, dag_run_id: str, created_after: datetime, hourly_prices: Mapping[str, float], now: datetime
) -> list[dict]:
    """``cluster_usage_for_report`` of every cluster the DAG run started, oldest first (a launch that
    failed is billed too); empty, with the reason printed, when EMR could not be asked."""
    from botocore.exceptions import BotoCoreError, ClientError

    from fruitflow_pipeline.cluster import clusters_of_run

    try:
        cluster_ids = clusters_of_run(emr_client, dag_run_id, created_after)
    except (BotoCoreError, ClientError) as problem:
        print(f"the clusters of DAG run {dag_run_id} could not be listed from EMR: {problem}")
        return []
    return [cluster_usage_for_report(emr_client, cluster_id, hourly_prices, now) for cluster_id in cluster_ids]
