"""The Spark session a job starts under plain spark-submit: the jobs' defaults, unless told otherwise."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fruitflow.cli import SESSION_DEFAULTS, session_settings
from fruitflow_pipeline.steps import default_spark_submit

SPARK_JOBS = Path(__file__).resolve().parents[2] / "spark_jobs"


def test_a_setting_spark_submit_was_given_is_never_replaced():
    assert session_settings({}) == SESSION_DEFAULTS
    given = {"spark.buffer.pageSize": "8m", "spark.app.name": "x"}
    assert session_settings(given) == {key: value for key, value in SESSION_DEFAULTS.items() if key not in given}
    assert session_settings(SESSION_DEFAULTS) == {}


def spark_properties(event_log: Path) -> dict[str, str]:
    """The Spark properties the application ran with, from its event log."""
    (log,) = event_log.iterdir()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerEnvironmentUpdate":
            return event["Spark Properties"]
    raise AssertionError(f"{log} has no environment update")


@pytest.mark.spark
def test_spark_submit_runs_a_job_with_the_defaults_or_with_what_it_was_given(tmp_path):
    def start(name: str, *conf: str) -> subprocess.Popen:
        event_log = tmp_path / name
        event_log.mkdir()
        command = [default_spark_submit(), "--master", "local[1]",
                   "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={event_log.as_uri()}",
                   *conf, str(SPARK_JOBS / "export_csv.py"),
                   "--pca", str(tmp_path / "missing"), "--output", str(tmp_path / f"{name}.csv")]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # Side by side: each is mostly a JVM starting. The job refuses the missing input after its session started.
    jobs = {"defaults": start("defaults"), "given": start("given", "--conf", "spark.buffer.pageSize=2m")}
    for job in jobs.values():
        output, _ = job.communicate(timeout=120)
        assert job.returncode == 1 and "does not exist (run pca first)" in output, output
    defaults, given = spark_properties(tmp_path / "defaults"), spark_properties(tmp_path / "given")
    assert {key: defaults[key] for key in SESSION_DEFAULTS} == SESSION_DEFAULTS
    assert given["spark.buffer.pageSize"] == "2m"
    assert given["spark.hadoop.parquet.block.size"] == SESSION_DEFAULTS["spark.hadoop.parquet.block.size"]


@pytest.mark.spark
def test_the_jobs_session_writes_parquet_in_row_groups_of_at_most_2_mb(spark, tmp_path):
    # Parquet holds a whole row group in memory, writing and reading it: a group that grew with the
    # bucket (128 MB by default) made PCA's driver grow with it.
    import pyarrow.parquet as pq

    rows = spark.range(1000).selectExpr("id", "transform(sequence(1, 1280), i -> cast(rand() as float)) AS features")
    rows.coalesce(1).write.parquet(str(tmp_path / "features"))
    (part,) = (tmp_path / "features").glob("part-*.parquet")
    metadata = pq.ParquetFile(part).metadata
    sizes = [metadata.row_group(index).total_byte_size for index in range(metadata.num_row_groups)]
    assert len(sizes) >= 2 and sum(sizes) > 5e6
    assert max(sizes) <= 1.25 * int(SESSION_DEFAULTS["spark.hadoop.parquet.block.size"])
