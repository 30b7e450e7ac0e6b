"""Where a cluster's time went and what it cost, from EMR's timelines (shaped as the API returns them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fruitflow_pipeline.cluster_usage import estimated_cost, instance_seconds, usage_lines, usage_summary
from fruitflow_pipeline.settings import SettingError, Settings

START = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def timeline(**minutes: float) -> dict:
    return {name: at(value) for name, value in minutes.items()}


def instance(kind: str, market: str, **minutes: float) -> dict:
    return {"InstanceType": kind, "Market": market, "Status": {"State": "TERMINATED", "Timeline": timeline(**minutes)}}


# A night: requested at 0, nodes launched by 3, ready at 9, steps 10-40, terminated at 45.
CLUSTER = {
    "Id": "j-NIGHT",
    "Status": {
        "State": "TERMINATED",
        "StateChangeReason": {"Code": "USER_REQUEST", "Message": "Terminated by user request"},
        "Timeline": timeline(CreationDateTime=0, ReadyDateTime=9, EndDateTime=45),
    },
    "NormalizedInstanceHours": 56,
}
INSTANCES = [
    instance("m5.xlarge", "ON_DEMAND", CreationDateTime=1, ReadyDateTime=8, EndDateTime=45),
    instance("m5.2xlarge", "ON_DEMAND", CreationDateTime=2, ReadyDateTime=9, EndDateTime=45),
    instance("m5.2xlarge", "ON_DEMAND", CreationDateTime=2, ReadyDateTime=9),  # no end recorded: the cluster's
    instance("m5.2xlarge", "SPOT", CreationDateTime=3, ReadyDateTime=9, EndDateTime=33),  # reclaimed early
]
STEPS = [
    {"Name": name, "Status": {"State": "COMPLETED", "Timeline": timeline(StartDateTime=start, EndDateTime=end)}}
    for name, start, end in [("featurize", 10, 30), ("pca", 30, 36), ("export_csv", 36, 40)]
]
PRICES = {"m5.xlarge": 0.24, "m5.2xlarge": 0.48, "m5.2xlarge:SPOT": 0.2}


def test_a_night_splits_into_its_phases_with_instance_time_and_cost():
    usage = usage_summary(CLUSTER, INSTANCES, STEPS, PRICES, now=at(60))

    assert usage["phases_seconds"] == {
        "provisioning": 180.0, "bootstrap": 360.0, "steps": 1800.0, "after_steps": 300.0, "total": 2700.0,
    }  # fmt: skip
    assert usage["instance_seconds"] == {
        "m5.2xlarge:ON_DEMAND": 2 * 43 * 60.0, "m5.2xlarge:SPOT": 30 * 60.0, "m5.xlarge:ON_DEMAND": 44 * 60.0,
    }  # fmt: skip
    assert usage["normalized_instance_hours"] == 56
    cost = usage["estimated_cost"]
    assert cost["by_kind"] == {
        "m5.2xlarge:ON_DEMAND": round(86 / 60 * 0.48, 4), "m5.2xlarge:SPOT": 0.1, "m5.xlarge:ON_DEMAND": 0.176,
    }  # fmt: skip
    assert cost["total"] == round(sum(cost["by_kind"].values()), 4)
    assert "as_of" not in usage and usage["state_reason"] == "Terminated by user request"
    lines = usage_lines(usage)
    assert lines[0] == (
        "cluster j-NIGHT TERMINATED: provisioning 180 s, bootstrap 360 s, steps 1800 s, after_steps 300 s, total 2700 s"
    )
    assert lines[1].startswith("instance time: m5.2xlarge:ON_DEMAND 1.43 h, m5.2xlarge:SPOT 0.50 h")
    assert lines[2] == f"estimated cost: {cost['total']:.2f} (FRUITFLOW_EMR_HOURLY_PRICES)"


def test_no_prices_no_cost_and_a_missing_price_is_named_not_guessed():
    assert usage_summary(CLUSTER, INSTANCES, STEPS, {}, now=at(60))["estimated_cost"] is None
    seconds = instance_seconds(INSTANCES, at(45), now=at(60))
    on_demand_only = {"m5.xlarge": 0.24, "m5.2xlarge": 0.48}
    assert estimated_cost(seconds, on_demand_only) == {"total": None, "missing_prices": ["m5.2xlarge:SPOT"]}
    lines = usage_lines(usage_summary(CLUSTER, INSTANCES, STEPS, on_demand_only, now=at(60)))
    assert lines[-1] == "no cost estimate: FRUITFLOW_EMR_HOURLY_PRICES has no price for m5.2xlarge:SPOT"


def test_a_cluster_that_failed_its_bootstrap_records_what_is_known():
    failed = {
        "Id": "j-BOOT",
        "Status": {
            "State": "TERMINATED_WITH_ERRORS",
            "StateChangeReason": {
                "Code": "BOOTSTRAP_FAILURE",
                "Message": "bootstrap action 1 returned a non-zero code",
            },
            "Timeline": timeline(CreationDateTime=0, EndDateTime=12),
        },
    }
    nodes = [instance("m5.xlarge", "ON_DEMAND", CreationDateTime=2, EndDateTime=12)]
    usage = usage_summary(failed, nodes, [], PRICES, now=at(60))
    assert usage["phases_seconds"] == {
        "provisioning": 120.0, "bootstrap": None, "steps": None, "after_steps": None, "total": 720.0,
    }  # fmt: skip
    assert usage["instance_seconds"] == {"m5.xlarge:ON_DEMAND": 600.0}
    assert usage["normalized_instance_hours"] is None
    assert usage["state_reason"].startswith("bootstrap action 1")


def test_a_cluster_still_running_counts_its_instances_until_now():
    running = {
        "Id": "j-LIVE",
        "Status": {"State": "RUNNING", "Timeline": timeline(CreationDateTime=0, ReadyDateTime=9)},
    }
    usage = usage_summary(running, [instance("m5.xlarge", "ON_DEMAND", CreationDateTime=1)], [], {}, now=at(31))
    assert usage["instance_seconds"] == {"m5.xlarge:ON_DEMAND": 1800.0}
    assert usage["as_of"] == at(31).isoformat(timespec="seconds")
    assert usage["phases_seconds"]["total"] is None


def test_hourly_prices_setting():
    env = {"FRUITFLOW_EMR_HOURLY_PRICES": '{"m5.xlarge": 0.24, "m5.2xlarge:SPOT": 0.2}'}
    assert Settings.from_env(env).emr.hourly_prices == {"m5.xlarge": 0.24, "m5.2xlarge:SPOT": 0.2}
    assert Settings.from_env({}).emr.hourly_prices == {}
    for raw in ("0.24", '{"m5.xlarge": "cheap"}', '{"m5.xlarge": -1}', "{not json", '["m5.xlarge"]'):
        with pytest.raises(SettingError, match="FRUITFLOW_EMR_HOURLY_PRICES must be a JSON object"):
            Settings.from_env({"FRUITFLOW_EMR_HOURLY_PRICES": raw})
