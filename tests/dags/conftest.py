"""Loading the real DAG under a target, a fresh metadata DB, and an AWS account in moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
REGION = "eu-west-1"


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


def use_test_account(monkeypatch, **connection_extra) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    extra = {"region_name": REGION, **connection_extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": extra}))


@pytest.fixture
def aws(monkeypatch):
    """An empty AWS account (moto, in this process) behind the aws_default connection."""
    from moto import mock_aws

    use_test_account(monkeypatch)
    with mock_aws():
        yield


@pytest.fixture
def aws_server(monkeypatch):
    """An empty AWS account served by moto over HTTP, behind the aws_default connection.

    A deferred sensor's trigger talks to AWS through aiobotocore, which moto cannot patch in
    process: it needs a real endpoint. The server runs in a thread of this process, so tests
    can still reach moto's models.
    """
    import requests
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    use_test_account(monkeypatch, endpoint_url=endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # for the boto3 clients the tests make themselves
    yield endpoint
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    server.stop()


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
