"""Loading the real DAG under a target, a fresh metadata DB, and an AWS account in moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def load_dag(monkeypatch) -> Callable:
    """The fruits_features DAG as Airflow parses it with the given FRUITFLOW_* settings.

    ``dag.test()`` parses the dags folder again, so the settings stay in the environment
    for the whole test.
    """

    def load(target: str, **settings: str):
        from airflow.dag_processing.dagbag import DagBag

        monkeypatch.setenv("FRUITFLOW_TARGET", target)
        for name, value in settings.items():
            monkeypatch.setenv(f"FRUITFLOW_{name.upper()}", value)
        bag = DagBag(dag_folder=str(DAGS))
        assert bag.import_errors == {}
        return bag.dags["fruits_features"]

    return load


@pytest.fixture
def aws(monkeypatch):
    """An empty AWS account (moto, in this process) behind the aws_default connection."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}))
    with mock_aws():
        yield


@pytest.fixture
def aws_calls(monkeypatch) -> list[tuple[str, dict]]:
    """Every AWS API call the code makes, as (operation, parameters), in order."""
    from botocore.client import BaseClient

    calls: list[tuple[str, dict]] = []
    original = BaseClient._make_api_call

    def record(client, operation, params):
        calls.append((operation, params))
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls
