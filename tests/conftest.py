"""Shared test setup: a throwaway Airflow home, local Spark, and generated images.

Environment variables are set at import time, before anything imports Airflow or
starts Spark, so both pick them up.

A test that starts a JVM (the ``spark`` fixture, a job's ``main``, a local DAG run's
spark-submit, the demo) is marked ``spark``: ``make test-fast`` deselects those. A test that
starts one without the mark fails, so the fast tier stays free of Spark.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPARK_JOBS = ROOT / "spark_jobs"

_airflow_home = Path(tempfile.mkdtemp(prefix="fruitflow-airflow-"))
os.environ.update(
    AIRFLOW_HOME=str(_airflow_home),
    # A featurize job given no --model-cache keeps its converted model in the per-user cache: the
    # tests' own, never the home folder of whoever runs them.
    XDG_CACHE_HOME=tempfile.mkdtemp(prefix="fruitflow-user-cache-"),
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_airflow_home}/airflow.db",
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    # Spark's Python workers must run this interpreter and find the jobs' package.
    PYSPARK_PYTHON=sys.executable,
    PYSPARK_DRIVER_PYTHON=sys.executable,
    PYTHONPATH=os.pathsep.join(filter(None, [str(SPARK_JOBS), os.environ.get("PYTHONPATH")])),
)


_running: pytest.Item | None = None  # the test whose setup, call or teardown runs now
_unmarked_jvm: dict[str, str] = {}  # node id -> what started a JVM without the spark mark


def _refuse_unmarked_spark(what: str) -> None:
    item = _running
    if item is not None and item.get_closest_marker("spark") is None:
        _unmarked_jvm[item.nodeid] = what
        pytest.fail(f"{item.nodeid} starts {what}: mark it @pytest.mark.spark (docs/develop/testing.md)", pytrace=False)


_original_popen_init = subprocess.Popen.__init__


def _popen_init(self, args, *rest, **kwargs):
    # spark-submit starts every JVM: a SparkSession's gateway and a local DAG run's steps alike.
    program = args[0] if isinstance(args, list | tuple) else str(args).split(" ", 1)[0]
    if Path(os.fsdecode(program)).name == "spark-submit":
        _refuse_unmarked_spark("a JVM (spark-submit)")
    _original_popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _popen_init


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def pytest_collection_modifyitems(items):
    # The tests that start a JVM take most of the suite's time: they go first, so that `make test`'s
    # workers end on the quick ones together rather than one waiting on a long test that began last.
    items.sort(key=lambda item: item.get_closest_marker("spark") is None)


def pytest_runtest_setup(item):
    if "spark" in item.fixturenames:
        _refuse_unmarked_spark("the spark fixture")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    # Also when the code under test swallowed the failure raised inside it (a task's error handling).
    if item.nodeid in _unmarked_jvm:
        pytest.fail(f"{item.nodeid} starts {_unmarked_jvm[item.nodeid]}: mark it @pytest.mark.spark", pytrace=False)
    return result


@pytest.fixture(scope="session")
def spark():
    import logging

    from pyspark.sql import SparkSession

    from fruitflow.cli import SESSION_DEFAULTS

    # py4j logs "closing" from a destructor after pytest has closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("fruitflow-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
        .config(map=SESSION_DEFAULTS)  # the jobs' own session settings
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def fruit_images(tmp_path_factory) -> Path:
    """30 generated fruit images, 3 per class, in <Training>/<class>/ folders."""
    from fruitflow.sample_images import generate_images

    folder = tmp_path_factory.mktemp("fruits")
    generate_images(folder, 30, seed=7)
    return folder


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> tuple[Path, bytes]:
    """A model cache folder after one cold run with random weights, and the ONNX model that run
    returned: converted once per test process (about 20 s of TensorFlow)."""
    from fruitflow.contract import WEIGHTS_RANDOM
    from fruitflow.onnx_model import ModelCache, onnx_model

    folder = tmp_path_factory.mktemp("models")
    cache = ModelCache(lambda uri: Path(uri).read_bytes(), lambda uri, data: Path(uri).write_bytes(data), str(folder))
    return folder, onnx_model(WEIGHTS_RANDOM, None, cache)


@pytest.fixture(scope="session")
def model_cache(converted) -> str:
    """``converted``'s cache as a ``file://`` URI, for the runs whose subject is not converting.
    Converting a cold cache is tested on its own (the ONNX model's tests, the featurize job's
    Hadoop-URI cache test, the rehearsal's first night)."""
    return f"file://{converted[0]}"


@pytest.fixture(scope="session")
def seed_model_cache(converted):
    """Copies ``converted``'s model into a results folder's ``_models``, the cache a run of the DAG
    uses: that run's featurize starts warm."""
    import shutil

    def seed(results: Path) -> Path:
        return Path(shutil.copytree(converted[0], results / "_models", dirs_exist_ok=True))

    return seed


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A tiny PNG that claims 182 million pixels: over twice Pillow's decompression-bomb limit."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (13500, 13500)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def job_log(caplog):
    """What the jobs log at INFO and above: their logger has its own handler and does not
    propagate once a job has run (cli.configure_logging), so caplog gets attached to it."""
    import logging

    logger = logging.getLogger("fruitflow")
    logger.addHandler(caplog.handler)
    with caplog.at_level("INFO", logger="fruitflow"):
        yield caplog
    logger.removeHandler(caplog.handler)
