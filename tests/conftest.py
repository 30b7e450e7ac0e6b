"""Shared test setup: a throwaway Airflow home, local Spark, and generated images.

Environment variables are set at import time, before anything imports Airflow or
starts Spark, so both pick them up.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPARK_JOBS = ROOT / "spark_jobs"

_airflow_home = Path(tempfile.mkdtemp(prefix="fruitflow-airflow-"))
os.environ.update(
    AIRFLOW_HOME=str(_airflow_home),
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_airflow_home}/airflow.db",
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    # Spark's Python workers must run this interpreter and find the jobs' package.
    PYSPARK_PYTHON=sys.executable,
    PYSPARK_DRIVER_PYTHON=sys.executable,
    PYTHONPATH=os.pathsep.join(filter(None, [str(SPARK_JOBS), os.environ.get("PYTHONPATH")])),
)


@pytest.fixture(scope="session")
def spark():
    import logging

    from pyspark.sql import SparkSession

    # py4j logs "closing" from a destructor after pytest has closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("fruitflow-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
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
