"""What every job shares: the error a user can act on, logging, and the run wrapper."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from fruitflow.contract import JobArguments, JobMetrics

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("fruitflow")

Arguments = TypeVar("Arguments", bound=JobArguments)

# Each keeps a job's memory from growing with the bucket.
SESSION_DEFAULTS = {
    # Small memory pages, as a pandas UDF queues its input rows in them (docs/decisions/0003-spark-page-size.md).
    "spark.buffer.pageSize": "1m",
    # Java serialization drops each cached batch once on disk (docs/decisions/0004-java-serialization-reset.md).
    "spark.serializer.objectStreamReset": "1",
    # Small row groups, as Parquet holds a whole one in memory (docs/decisions/0005-parquet-row-groups.md).
    "spark.hadoop.parquet.block.size": str(2 * 1024 * 1024),
}


class JobError(Exception):
    """A problem with the job's input or arguments: reported as one readable line, exit code 1."""


def configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def session_settings(given: Mapping[str, str]) -> dict[str, str]:
    """The settings a job's session starts with: ``SESSION_DEFAULTS`` except where ``given`` (the
    spark-submit configuration) already says otherwise."""
    return {key: value for key, value in SESSION_DEFAULTS.items() if key not in given}


def session(name: str) -> SparkSession:
    """The running session (its starter chose its settings), or a new one with the job's defaults."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # A SparkConf made before the JVM is up is empty: starting it first lets SparkConf() read
    # what spark-submit was given (its --conf and spark-defaults.conf, as JVM system properties).
    SparkContext._ensure_initialized()
    defaults = session_settings(dict(SparkConf().getAll()))
    return SparkSession.builder.appName(name).config(map=defaults).getOrCreate()


def run_job(
    arguments: type[Arguments],
    body: Callable[[SparkSession, Arguments], JobMetrics],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the job's arguments, run ``body`` on the (possibly already running) Spark session,
    and end with the one-line summary. Returns the process exit code."""
    args = arguments.parse(argv)  # bad arguments: argparse prints usage and exits with 2
    name = arguments.job
    configure_logging()
    started = time.monotonic()

    from fruitflow import hadoop_fs

    spark = session(f"fruitflow-{name}")
    try:
        metrics = body(spark, args).timed(time.monotonic() - started)
    except JobError as exc:
        log.error("%s failed: %s", name, exc)
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    log.info("%s done: %s", name, metrics.summary())
    if args.metrics:
        hadoop_fs.write_bytes(spark, args.metrics, metrics.to_json().encode())
    return 0
