"""The docs' IAM policy (docs/deploy/aws.md) for the role that runs the DAG, against the AWS calls two full moto
nights make: every call is allowed by a statement (action, resource, S3 prefix condition), and
every action the policy grants is used. A moto run, not an AWS run: the policy is evaluated here
by the rules IAM documents for Allow statements (action and resource match, StringLike conditions),
not by IAM itself."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import boto3
from test_emr_control_plane import (
    BUCKET,
    CONF,
    INTERNAL_ERROR,
    FakeEmr,
    LaunchFailures,
    guarded_emr_dag,
    task_states,
)

POLICY_PAGE = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "aws.md"
ACCOUNT = "123456789012"  # moto's account
PLACEHOLDERS = {"<account>": ACCOUNT, "<bucket>": BUCKET}
CLUSTER_ARN = "arn:aws:elasticmapreduce:eu-west-1:" + ACCOUNT + ":cluster/{}"


def readme_policy() -> list[dict]:
    """The statements of the policy after the page's ``fruitflow-dag-role-policy`` marker."""
    text = POLICY_PAGE.read_text()
    block = re.search(r"<!-- fruitflow-dag-role-policy -->\s*```json\n(.*?)```", text, re.DOTALL).group(1)
    for placeholder, value in PLACEHOLDERS.items():
        block = block.replace(placeholder, value)
    return json.loads(block)["Statement"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def permissions_for(operation: str, params: dict) -> list[tuple[str, str, dict]]:
    """What IAM checks for one API call: (action, resource ARN, condition context) each. S3's
    HeadObject is authorised as s3:GetObject, ListObjectsV2 as s3:ListBucket, DeleteObjects as
    s3:DeleteObject per key (Amazon S3 User Guide, "Required permissions for Amazon S3 API operations")."""
    if operation in ("GetObject", "HeadObject", "PutObject"):
        action = "s3:PutObject" if operation == "PutObject" else "s3:GetObject"
        return [(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", {})]
    if operation == "DeleteObjects":
        keys = [item["Key"] for item in params["Delete"]["Objects"]]
        return [("s3:DeleteObject", f"arn:aws:s3:::{params['Bucket']}/{key}", {}) for key in keys]
    if operation == "ListObjectsV2":
        return [("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}", {"s3:prefix": params.get("Prefix", "")})]
    if operation == "RunJobFlow":
        roles = [params["ServiceRole"], params["JobFlowRole"]]  # the instance profile carries its role's name
        passed = [("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/{role}", {}) for role in roles]
        return [("elasticmapreduce:RunJobFlow", "*", {}), *passed]
    if operation == "ListClusters":
        return [("elasticmapreduce:ListClusters", "*", {})]
    cluster_ids = params.get("JobFlowIds") or [params.get("ClusterId") or params["JobFlowId"]]
    return [(f"elasticmapreduce:{operation}", CLUSTER_ARN.format(cluster_id), {}) for cluster_id in cluster_ids]


def allows(statement: dict, action: str, resource: str, context: dict) -> bool:
    if statement["Effect"] != "Allow" or action not in as_list(statement["Action"]):
        return False
    if not any(fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"])):
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        assert operator == "StringLike", f"the test evaluates StringLike conditions only, not {operator}"
        for key, patterns in conditions.items():
            if key not in context or not any(fnmatchcase(context[key], p) for p in as_list(patterns)):
                return False
    return True


def test_the_readme_policy_allows_every_call_of_two_full_nights_and_grants_nothing_unused(
    load_dag, aws, airflow_db, monkeypatch, aws_calls
):
    emr_dag = guarded_emr_dag(load_dag, keep_runs="1")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="models/mobilenet_v2.h5", Body=b"weights")
    conf = CONF | {"weights": f"s3://{BUCKET}/models/mobilenet_v2.h5"}
    FakeEmr(monkeypatch)
    LaunchFailures(monkeypatch, "INTERNAL_ERROR", INTERNAL_ERROR)  # the first night's first cluster
    aws_calls.clear()  # from here on, only the DAG's own calls

    first = emr_dag.test(logical_date=datetime(2026, 11, 26, 2, tzinfo=UTC), run_conf=conf)
    calls = list(aws_calls)
    s3.put_object(Bucket=BUCKET, Key="images/Kiwi/new.jpg", Body=b"\xff\xd8 another")
    second_starts = len(aws_calls)  # the test's own PutObject between the nights is no DAG call
    second = emr_dag.test(logical_date=datetime(2026, 11, 27, 2, tzinfo=UTC), run_conf=conf)
    calls += aws_calls[second_starts:]

    assert first.state == second.state == "success", (task_states(first), task_states(second))
    assert {"RunJobFlow", "TerminateJobFlows", "DeleteObjects", "AddJobFlowSteps"} <= {name for name, _ in calls}
    statements = readme_policy()
    needed = [permission for operation, params in calls for permission in permissions_for(operation, params)]
    refused = {
        (action, resource)
        for action, resource, context in needed
        if not any(allows(statement, action, resource, context) for statement in statements)
    }
    assert refused == set()
    granted = {action for statement in statements for action in as_list(statement["Action"])}
    assert granted == {action for action, _, _ in needed}
