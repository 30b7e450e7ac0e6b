"""CSV export job: the PCA Parquet as one comma-separated file, one column per component.

Written by one Spark task (never collected to the driver), then moved from Spark's
output folder to exactly --output.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from fruitflow import hadoop_fs
from fruitflow.cli import JobError, run_job
from fruitflow.contract import ExportCsvArguments, ExportCsvMetrics

ARGUMENTS = ExportCsvArguments


def component_columns(k: int) -> list[str]:
    return [f"pc_{index}" for index in range(1, k + 1)]


def extract_pca(spark, args: ExportCsvArguments):
    """The pca output's rows and k, the length of its first vector."""
    from pyspark.sql import functions as F

    if not hadoop_fs.exists(spark, args.pca):
        raise JobError(f"PCA output {args.pca} does not exist (run pca first)")
    reduced = spark.read.parquet(args.pca)
    if {"path", "label", "pca"} - set(reduced.columns):
        raise JobError(f"{args.pca} is not a pca output: it needs the columns path, label and pca")
    first = reduced.select(F.size("pca").alias("k")).first()
    if first is None:
        raise JobError(f"{args.pca} holds no rows")
    return reduced, first.k


def transform(reduced, k: int, written):
    """path, label, pc_1..pc_k; ``written`` observes the row count and vector lengths as it goes,
    so the summary costs no second pass over the data."""
    from pyspark.sql import functions as F

    observed = reduced.observe(
        written,
        F.count("*").alias("rows"),
        F.min(F.size("pca")).alias("shortest"),
        F.max(F.size("pca")).alias("longest"),
    )
    return observed.select(
        "path", "label", *[F.col("pca")[index].alias(name) for index, name in enumerate(component_columns(k))]
    )


def load(spark, table, written, args: ExportCsvArguments) -> dict:
    """One CSV file at --output, written by one task and sorted by path; the observed shape."""
    staging = f"{args.output.rstrip('/')}.{uuid.uuid4().hex}.parts"
    (
        table.repartition(1)
        .sortWithinPartitions("path")
        .write.option("header", "true")
        .option("escape", '"')  # RFC 4180 doubled quotes, as pandas and spreadsheets expect
        .csv(staging)
    )
    shape = written.get
    if shape["shortest"] != shape["longest"]:
        hadoop_fs.delete(spark, staging)
        raise JobError(f"PCA vectors in {args.pca} differ in length ({shape['shortest']} to {shape['longest']})")
    hadoop_fs.replace_with_single_part(spark, staging, ".csv", args.output)
    return shape


def run(spark, args: ExportCsvArguments) -> ExportCsvMetrics:
    from pyspark.sql import Observation

    reduced, k = extract_pca(spark, args)
    written = Observation("csv")
    shape = load(spark, transform(reduced, k, written), written, args)
    return ExportCsvMetrics(rows=shape["rows"], components=k)


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(ARGUMENTS, run, argv)
