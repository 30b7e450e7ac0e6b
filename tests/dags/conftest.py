"""Loading the real DAG under a target, a fresh metadata DB, and an AWS account in moto."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
REGION = "eu-west-1"
TEST_BUCKET = "fruits"  # the bucket of the EMR tests' runs


# Repeated work that third-party code redoes on every call, done once per test process. Each
# replacement computes what the original computes; the tests see the same results, sooner.


def _share_botocore_data_loader() -> None:
    """Every AWS hook makes its own boto3 session, and each new session parsed botocore's JSON
    service models again (a fifth of a moto DAG run). The clients of one session share one
    loader; this shares it between the sessions of the test process too."""
    import botocore.session

    loaders = {}
    create_loader = botocore.session.create_loader

    def shared_loader(search_path_string=None):
        if search_path_string not in loaders:
            loaders[search_path_string] = create_loader(search_path_string)
        return loaders[search_path_string]

    botocore.session.create_loader = shared_loader


def _check_each_json_schema_once() -> None:
    """``jsonschema.validate`` checks the schema itself against its metaschema before validating
    the instance; Airflow validates each DAG param that way thousands of times a run (each
    serialisation compares the params). A schema that passed the check passes it again."""
    import jsonschema
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    checked = set()

    def validate(instance, schema, cls=None, *args, **kwargs):
        if cls is None:
            cls = validator_for(schema)
        key = (cls, json.dumps(schema, sort_keys=True, default=repr))
        if key not in checked:
            cls.check_schema(schema)
            checked.add(key)
        error = best_match(cls(schema, *args, **kwargs).iter_errors(instance))
        if error is not None:
            raise error

    jsonschema.validate = validate


def _find_aws_callers_without_reading_source() -> None:
    """The AWS hooks name their caller in the user agent by walking ``inspect.stack()``, which
    reads the source line of every frame (seconds per moto DAG run); the same walk over the
    frames themselves finds the same caller."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    def find_operator_class_name(target_function_name: str) -> str | None:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != target_function_name:
            frame = frame.f_back
        return None if frame is None else frame.f_locals["self"].__class__.__name__

    AwsGenericHook._find_operator_class_name = staticmethod(find_operator_class_name)


def _poll_dag_test_without_idling() -> None:
    """``dag.test()`` sleeps a second whenever no task is ready to run, waiting for its own next
    state update (the teardowns of a run whose setup failed, a deferred task): the same loop polls
    again after a twentieth of a second here."""
    import inspect
    import time

    from airflow.sdk.definitions.dag import DAG

    dag_test, sleep = inspect.unwrap(DAG.test).__code__, time.sleep

    def poll_sooner(seconds: float) -> None:
        sleep(min(seconds, 0.05) if sys._getframe(1).f_code is dag_test else seconds)

    time.sleep = poll_sooner


_share_botocore_data_loader()
_check_each_json_schema_once()
_find_aws_callers_without_reading_source()
_poll_dag_test_without_idling()


@pytest.fixture(scope="session")
def features_asset_events() -> Callable[[], list[dict]]:
    """Reads the extra of each event of the features asset in the metadata DB, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    def events() -> list[dict]:
        with create_session() as session:
            query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            # The same name and URI on both targets: Airflow keeps one URI per asset name, and a
            # downstream DAG's schedule names both.
            query = query.where(AssetModel.name == "fruitflow_features")
            query = query.where(AssetModel.uri == "x-fruitflow://fruits_features/features")
            return [event.extra for event in session.scalars(query.order_by(AssetEvent.id))]

    return events


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.resetdb()


def allowed_for_tests(temporary_root: Path) -> dict[str, str]:
    """Where the tests' deployment lets runs go (FRUITFLOW_ALLOWED_URIS) unless a test says otherwise:
    the tests' bucket on EMR, pytest's temporary folders locally."""
    return {"emr": f"s3://{TEST_BUCKET}/", "local": str(temporary_root)}


def dag_loader(monkeypatch: pytest.MonkeyPatch, temporary_root: Path) -> Callable:
    """Loads the fruits_features DAG as Airflow parses it with the given FRUITFLOW_* settings,
    which stay in the environment until ``monkeypatch`` undoes them: ``dag.test()`` parses the
    dags folder again. ``allowed_uris=""`` loads it with the variable unset."""

    def load(target: str, **settings: str):
        from airflow.dag_processing.dagbag import DagBag

        monkeypatch.setenv("FRUITFLOW_TARGET", target)
        monkeypatch.setenv("FRUITFLOW_ALLOWED_URIS", allowed_for_tests(temporary_root)[target])
        for name, value in settings.items():
            monkeypatch.setenv(f"FRUITFLOW_{name.upper()}", value)
        bag = DagBag(dag_folder=str(DAGS))
        assert bag.import_errors == {}
        return bag.dags["fruits_features"]

    return load


@pytest.fixture
def load_dag(monkeypatch, tmp_path_factory) -> Callable:
    """The fruits_features DAG under a target and settings, for the whole test."""
    return dag_loader(monkeypatch, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def load_dag_for_module(tmp_path_factory) -> Iterator[Callable]:
    """``load_dag`` for a module-scoped fixture: the settings stay until the module's tests are done."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield dag_loader(monkeypatch, tmp_path_factory.getbasetemp())


class InProcessSparkSubmit:
    """Stands in for the SubprocessHook with which the local target's operator runs a step's
    spark-submit: runs the step's job, with the arguments the command line gives its script, on
    this process's Spark session; its exit code, and the last line it wrote to stderr."""

    def run_command(self, command: list[str], env: dict | None = None, **kwargs):
        from airflow.providers.standard.hooks.subprocess import SubprocessResult

        submitted = command.index("--py-files") + 2  # --py-files <code>/fruitflow.zip <code>/<job>.py args...
        job = import_module(f"fruitflow.{Path(command[submitted]).stem}")
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            try:
                code = job.main(command[submitted + 1 :])
            except SystemExit as stopped:  # argparse's usage errors
                code = stopped.code
        lines = errors.getvalue().strip().splitlines()
        return SubprocessResult(exit_code=code, output=lines[-1] if lines else "")

    def send_sigterm(self) -> None:
        pass


def submit_steps_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fruitflow_pipeline.operators.SubprocessHook", InProcessSparkSubmit)


@pytest.fixture(scope="module")
def spark_steps_in_process(spark) -> Iterator[None]:
    """The local target's steps run in this process's Spark session, not one spark-submit (and JVM)
    each: for the tests whose subject is what a run or a week of runs does with its inputs and
    outputs. The demo (tests/test_newcomer_commands.py) submits the steps for real."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        submit_steps_in_process(monkeypatch)
        yield


@pytest.fixture
def spark_steps_in_process_for_test(spark, monkeypatch) -> None:
    """``spark_steps_in_process`` for one test."""
    submit_steps_in_process(monkeypatch)


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
