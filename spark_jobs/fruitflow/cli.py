"""What every job shares: the error a user can act on, logging, and the run wrapper."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from fruitflow.contract import JobArguments, JobMetrics

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("fruitflow")

Arguments = TypeVar("Arguments", bound=JobArguments)


class JobError(Exception):
    """A problem with the job's input or arguments: reported as one readable line, exit code 1."""


def configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


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

    from pyspark.sql import SparkSession

    from fruitflow import hadoop_fs

    spark = SparkSession.builder.appName(f"fruitflow-{name}").getOrCreate()
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
