"""The relaunch rules: which ways a cluster can end before it is ready start another one."""

from __future__ import annotations

import pytest

from fruitflow_pipeline.launch import RELAUNCH_RULES, launch_outcome


def cluster(state: str, code: str | None = None, message: str | None = None) -> dict:
    reason = {key: value for key, value in (("Code", code), ("Message", message)) if value}
    return {"Id": "j-1", "Status": {"State": state, "StateChangeReason": reason}}


def test_each_relaunch_rule_cites_an_emr_documentation_page():
    assert set(RELAUNCH_RULES) == {"INTERNAL_ERROR", "INSTANCE_FLEET_TIMEOUT"}
    for rule in RELAUNCH_RULES.values():
        pages = rule.source.split("; ")
        assert all(page.startswith("https://docs.aws.amazon.com/emr/latest/") for page in pages), rule


@pytest.mark.parametrize("state", ["WAITING", "RUNNING"])
def test_a_ready_cluster_is_handed_on(state):
    outcome = launch_outcome(cluster(state), launched=1, max_launches=2)
    assert (outcome.state, outcome.relaunch) == (state, False)
    assert outcome.explanation == f"cluster j-1 is ready ({state})"


@pytest.mark.parametrize("code", ["INTERNAL_ERROR", "INSTANCE_FLEET_TIMEOUT"])
def test_a_transient_reason_relaunches_while_launches_are_left(code):
    ended = cluster("TERMINATED_WITH_ERRORS", code, "no capacity")
    first = launch_outcome(ended, launched=1, max_launches=2)
    assert first.relaunch and first.explanation.endswith("launching cluster 2 of at most 2")
    assert f"({code}: no capacity)" in first.explanation and RELAUNCH_RULES[code].source in first.explanation
    last = launch_outcome(ended, launched=2, max_launches=2)
    assert not last.relaunch
    assert last.explanation.endswith("this was cluster 2 of at most 2 (FRUITFLOW_EMR_LAUNCH_ATTEMPTS)")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("VALIDATION_ERROR", "The subnet does not exist"),
        ("BOOTSTRAP_FAILURE", "On the master instance (i-1), bootstrap action 1 returned a non-zero return code"),
        ("USER_REQUEST", "Terminated by user request"),
        ("INSTANCE_FAILURE", "An instance failed"),
        (None, None),
        ("SOMETHING_NEW", "a code EMR adds later"),
    ],
)
def test_any_other_reason_fails_at_once_naming_it(code, message):
    outcome = launch_outcome(cluster("TERMINATED_WITH_ERRORS", code, message), launched=1, max_launches=5)
    assert not outcome.relaunch
    said = f"{code}: {message}" if code else "no reason given"
    assert outcome.explanation == (
        f"cluster j-1 ended TERMINATED_WITH_ERRORS before it was ready ({said}): "
        "not a reason a new cluster would avoid, so no relaunch"
    )


def test_a_cluster_still_starting_when_the_wait_ends_is_not_relaunched():
    outcome = launch_outcome(cluster("BOOTSTRAPPING"), launched=1, max_launches=2)
    assert not outcome.relaunch
    assert outcome.explanation == "cluster j-1 was still BOOTSTRAPPING when the wait for it to be ready ended"
