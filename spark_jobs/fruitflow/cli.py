"""What every job shares: argument types, the error a user can act on, and the run wrapper."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("fruitflow")


class JobError(Exception):
    """A problem with the job's input or arguments: reported as one readable line, exit code 1."""


def variance_share(text: str) -> float:
    """argparse type for a share of explained variance, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside (0, 1]; 0.95 keeps 95% of the variance")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def job_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    parser.add_argument(
        "--metrics",
        metavar="URI",
        help="also write the job's one-line summary as JSON to this URI (used by the DAG's report)",
    )
    return parser


def configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def run_job(
    name: str,
    parser: argparse.ArgumentParser,
    body: Callable[[SparkSession, argparse.Namespace], dict],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse arguments, run ``body`` on the (possibly already running) Spark session, and
    end with the one-line summary. Returns the process exit code."""
    args = parser.parse_args(argv)  # bad arguments: argparse prints usage and exits with 2
    configure_logging()
    started = time.monotonic()

    from pyspark.sql import SparkSession

    from fruitflow import hadoop_fs

    spark = SparkSession.builder.appName(f"fruitflow-{name}").getOrCreate()
    try:
        summary = body(spark, args)
    except JobError as exc:
        log.error("%s failed: %s", name, exc)
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    summary = {"job": name, **summary, "seconds": round(time.monotonic() - started, 2)}
    log.info("%s done: %s", name, " ".join(f"{key}={value}" for key, value in summary.items()))
    if args.metrics:
        hadoop_fs.write_bytes(spark, args.metrics, json.dumps(summary, indent=2).encode())
    return 0
