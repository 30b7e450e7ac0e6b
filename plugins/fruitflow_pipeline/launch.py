"""When a cluster that ended before it was ready is worth launching again: the relaunch rules.

A cluster is ready once EMR says WAITING or RUNNING (bootstrap done, able to run steps). One that
ends before that carries EMR's ``StateChangeReason`` (a code and a message; EMR API Reference,
``ClusterStateChangeReason``). Only the codes that EMR's documentation describes as transient or
bound to capacity, which a second launch may not meet, relaunch; every other reason fails the
run at once, naming it. Steps are added only to a ready cluster, so no rule can relaunch once a
step has started: a failed step stays a failed night.
"""

from __future__ import annotations

from dataclasses import dataclass

READY_STATES = ("WAITING", "RUNNING")
ENDED_STATES = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")


@dataclass(frozen=True)
class RelaunchRule:
    code: str
    why: str
    source: str


# The codes a replacement cluster may not meet. Any code not here (VALIDATION_ERROR: a bad request
# or a role without permissions; BOOTSTRAP_FAILURE: the bootstrap script failed; USER_REQUEST;
# INSTANCE_FAILURE, which no EMR page describes as transient; an unknown code) fails at once.
RELAUNCH_RULES = {
    rule.code: rule
    for rule in [
        RelaunchRule(
            "INTERNAL_ERROR",
            "EMR's internal errors include insufficient EC2 capacity in the zone and no spot capacity for "
            "the primary node; capacity shifts often, and EMR's advice is a new cluster",
            "https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-troubleshoot-error-errordetail-internal.html; "
            "https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-events-response-insuff-capacity.html",
        ),
        RelaunchRule(
            "INSTANCE_FLEET_TIMEOUT",
            "an instance fleet's capacity was not provisioned within its provisioning timeout",
            "https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-provisioning-timeout-launch.html",
        ),
    ]
}


@dataclass(frozen=True)
class LaunchOutcome:
    """What became of one launched cluster, and what the operator does next."""

    cluster_id: str
    state: str
    reason_code: str
    reason_message: str
    relaunch: bool
    explanation: str


def launch_outcome(cluster: dict, launched: int, max_launches: int) -> LaunchOutcome:
    """The verdict on ``cluster`` (DescribeCluster's ``Cluster``), the ``launched``-th of at most
    ``max_launches`` clusters of this try: ready, relaunch, or fail with the reason named."""
    status = cluster["Status"]
    reason = status.get("StateChangeReason") or {}
    code, message = reason.get("Code", ""), reason.get("Message", "")
    said = ": ".join(filter(None, [code, message])) or "no reason given"
    base = {"cluster_id": cluster["Id"], "state": status["State"], "reason_code": code, "reason_message": message}
    if status["State"] in READY_STATES:
        ready = f"cluster {cluster['Id']} is ready ({status['State']})"
        return LaunchOutcome(**base, relaunch=False, explanation=ready)
    if status["State"] not in ENDED_STATES:
        return LaunchOutcome(
            **base,
            relaunch=False,
            explanation=f"cluster {cluster['Id']} was still {status['State']} when the wait for it to be ready ended",
        )
    ended = f"cluster {cluster['Id']} ended {status['State']} before it was ready ({said})"
    rule = RELAUNCH_RULES.get(code)
    if rule is None:
        return LaunchOutcome(
            **base, relaunch=False, explanation=f"{ended}: not a reason a new cluster would avoid, so no relaunch"
        )
    if launched >= max_launches:
        return LaunchOutcome(
            **base,
            relaunch=False,
            explanation=f"{ended}: {code} may pass, but this was cluster {launched} of at most {max_launches} "
            "(FRUITFLOW_EMR_LAUNCH_ATTEMPTS)",
        )
    return LaunchOutcome(
        **base,
        relaunch=True,
        explanation=f"{ended}: {rule.why} ({rule.source}); launching cluster {launched + 1} of at most {max_launches}",
    )
