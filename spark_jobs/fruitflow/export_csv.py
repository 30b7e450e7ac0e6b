"""CSV export job: the PCA Parquet as one comma-separated file, one column per component.

Written by one Spark task (never collected to the driver), then moved from Spark's
output folder to exactly --output.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence

from fruitflow import hadoop_fs
from fruitflow.cli import JobError, job_parser, run_job


def component_columns(k: int) -> list[str]:
    return [f"pc_{index}" for index in range(1, k + 1)]


def export_csv(spark, args: argparse.Namespace) -> dict:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    if not hadoop_fs.exists(spark, args.pca):
        raise JobError(f"PCA output {args.pca} does not exist (run pca first)")
    reduced = spark.read.parquet(args.pca)
    if {"path", "label", "pca"} - set(reduced.columns):
        raise JobError(f"{args.pca} is not a pca output: it needs the columns path, label and pca")
    first = reduced.select(F.size("pca").alias("k")).first()
    if first is None:
        raise JobError(f"{args.pca} holds no rows")
    columns = component_columns(first.k)
    # Counted while writing: no second pass over the data just for the summary.
    written = Observation("csv")
    table = reduced.observe(
        written, F.count("*").alias("rows"), F.min(F.size("pca")).alias("shortest"), F.max(F.size("pca")).alias("longest")
    ).select("path", "label", *[F.col("pca")[index].alias(name) for index, name in enumerate(columns)])
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
    return {"rows": shape["rows"], "components": len(columns)}


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("export_csv", "Write the PCA output as one CSV file: path,label,pc_1..pc_k.")
    parser.add_argument("--pca", required=True, metavar="URI", help="pca output (Parquet)")
    parser.add_argument("--output", required=True, metavar="URI", help="the CSV file to write (replaced if present)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("export_csv", build_parser(), export_csv, argv)
