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

# Spark sizes a Tungsten memory page as execution memory / cores / 16, capped at 64 MB
# (MemoryManager.defaultPageSizeBytes; SPARK-9411 made it spark.buffer.pageSize): 64 MB with the
# local 4 GB driver and on EMR's executors. A pandas UDF queues its input rows in such pages until
# the Python worker returns them, and a task with more rows in flight takes more pages: PCA's
# driver JVM on 90,000 images peaked at 1.22-1.33 GB with 64 MB pages and 0.89-1.13 GB with 1 MB
# pages (four runs each; README, "At Fruits-360's size"). A record larger than a page gets a page
# of its own size.
#
# A DISK_ONLY block is written through Java serialization, whose stream keeps a reference to every
# object it wrote until it is reset, every 100 objects by default (spark.serializer.objectStreamReset):
# each cached batch of a partition then stays on the heap until the whole partition is on disk, and a
# partition grows with the bucket. Reset after each object, a batch goes once it is written.
#
# Parquet holds a whole row group in memory, writing it (until the group is flushed) and reading it
# (every page of the column chunk), and a row group grows with its file up to parquet.block.size,
# 128 MB by default: 40 MB files on 90,000 images, 5 MB on 10,000. 2 MB groups bound both.
# PCA's driver JVM on 90,000 synthetic 1280-d rows: 1.44 GB as before, 0.97 GB with the reset,
# 0.78 GB with 8 MB groups too, the same as on 10,000 rows (0.77-0.80 GB). export_csv, which reads
# 8 MB groups of PCA's output on 90,000 images and 3 MB ones on 10,000, peaked at 700 MB and
# 545 MB; 590 MB and 520 MB with 2 MB groups, no slower (README, "At Fruits-360's size").
SESSION_DEFAULTS = {
    "spark.buffer.pageSize": "1m",
    "spark.serializer.objectStreamReset": "1",
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
