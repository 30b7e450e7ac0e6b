"""CSV export job: the PCA Parquet as one comma-separated file sorted by path, one column per component.

Written by Spark's tasks as path ranges, each sorted on its own (never collected to the driver),
then joined in order into exactly --output.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

from fruitflow import hadoop_fs
from fruitflow.cli import JobError, run_job
from fruitflow.contract import ExportCsvArguments, ExportCsvMetrics, csv_columns

ARGUMENTS = ExportCsvArguments

# Rows per sorted part: the sort's memory is the same for any bucket (docs/decisions/0012-csv-sorted-parts.md).
ROWS_PER_PART = 5000


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
        "path", "label", *[F.col("pca")[index].alias(name) for index, name in enumerate(csv_columns(k)[2:])]
    )


def load(spark, reduced, k: int, written, args: ExportCsvArguments) -> dict:
    """One CSV file at --output, sorted by path; the observed shape and the file's size.

    Range-partitioned by path into parts of about ``ROWS_PER_PART`` rows, each sorted by its own
    task, written without a header, then joined in order behind one header line.
    """
    parts = max(1, math.ceil(reduced.count() / ROWS_PER_PART))  # the count comes from Parquet's footers
    table = transform(reduced.repartitionByRange(parts, "path"), k, written)
    staging = f"{args.output.rstrip('/')}.{uuid.uuid4().hex}.parts"
    (
        table.sortWithinPartitions("path")
        .write.option("header", "false")
        .option("escape", '"')  # RFC 4180 doubled quotes, as pandas and spreadsheets expect
        .csv(staging)
    )
    shape = written.get
    if shape["shortest"] != shape["longest"]:
        hadoop_fs.delete(spark, staging)
        raise JobError(f"PCA vectors in {args.pca} differ in length ({shape['shortest']} to {shape['longest']})")
    header = ",".join(csv_columns(k)) + "\n"
    hadoop_fs.concatenate_parts(spark, staging, ".csv", args.output, header.encode())
    size, _ = hadoop_fs.file_status(spark, args.output)
    return {**shape, "bytes": size}


def run(spark, args: ExportCsvArguments) -> ExportCsvMetrics:
    from pyspark.sql import Observation

    reduced, k = extract_pca(spark, args)
    written = Observation("csv")
    shape = load(spark, reduced, k, written, args)
    return ExportCsvMetrics(rows=shape["rows"], components=k, bytes=shape["bytes"])


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(ARGUMENTS, run, argv)
